//! What is limited (the scope) and for whom (the subject), and the Redis
//! key that holds one subject's state.
//!
//! A key reads `<prefix>rl:{<slot>}:<scope>:<subject>`. The subject is a
//! SHA-256 of what identifies it (an API key id, an external id, a device
//! id, a token, an address), cut to 128 bits: Redis never holds one in
//! clear, and every key has the same bounded length whatever the caller
//! sent. The `{slot}` hash tag is what one decision's keys share, so that a
//! Redis Cluster keeps a multi-scope decision (and the write it guards) in
//! one slot: the app for scopes inside one app, the subject itself
//! otherwise.

use std::cell::RefCell;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::api_key::KeyId;
use crate::secret::push_lower_hex;
use crate::validate::{AppId, ExternalId};

use super::rate::Rate;

/// What a limit counts. Its name is the `scope` label of
/// `devicelink_rate_limited_total` and the subject of a `QuotaFailure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `MintAuthCode` per API key.
    MintPerKey,
    /// `MintAuthCode` per (app, external id).
    MintPerExternalId,
    /// `CreateUser` per (app, device id).
    RedeemPerDevice,
    /// `GetInstallStatus` and `ResetInstall` per install token.
    InstallPerToken,
    /// Failed credentials per client address.
    FailedAuthPerAddress,
}

impl Scope {
    /// Every scope, in a stable order.
    pub const ALL: [Self; 5] = [
        Self::MintPerKey,
        Self::MintPerExternalId,
        Self::RedeemPerDevice,
        Self::InstallPerToken,
        Self::FailedAuthPerAddress,
    ];

    /// The scope's stable name, e.g. `mint_per_key`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MintPerKey => "mint_per_key",
            Self::MintPerExternalId => "mint_per_external_id",
            Self::RedeemPerDevice => "redeem_per_device",
            Self::InstallPerToken => "install_per_token",
            Self::FailedAuthPerAddress => "failed_auth_per_address",
        }
    }

    /// What the limit is, for a person reading a refusal.
    pub fn description(self) -> &'static str {
        match self {
            Self::MintPerKey => "too many auth codes minted with this API key",
            Self::MintPerExternalId => "too many auth codes minted for this external id",
            Self::RedeemPerDevice => "too many sign-ins from this device",
            Self::InstallPerToken => "too many calls with this install token",
            Self::FailedAuthPerAddress => "too many failed credentials from this address",
        }
    }
}

/// One subject of one scope: which Redis key (and which in-memory entry)
/// holds its state. Built by the constructors below only, so that no key
/// can carry a subject in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitKey {
    scope: Scope,
    slot: [u8; 8],
    subject: [u8; 16],
}

/// Hashed as one write of its bytes: the in-memory tables hash keys several
/// times a call, and a write per field cost more than the hashing itself.
impl std::hash::Hash for LimitKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut bytes = [0u8; 25];
        bytes[0] = self.scope as u8;
        bytes[1..9].copy_from_slice(&self.slot);
        bytes[9..].copy_from_slice(&self.subject);
        state.write(&bytes);
    }
}

impl LimitKey {
    /// `MintAuthCode` per API key (the verified key's public id).
    /// Remembered per thread for the key last asked about: a backend mints
    /// with one key call after call.
    pub fn mint_per_key(app_id: AppId, key_id: &KeyId) -> Self {
        thread_local! {
            static LAST: RefCell<Option<(AppId, String, LimitKey)>> = const { RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| match last {
            Some((app, key, limit_key)) if *app == app_id && key == key_id.as_str() => {
                limit_key.clone()
            }
            _ => {
                let limit_key = Self::in_app(Scope::MintPerKey, app_id, key_id.as_str().as_bytes());
                *last = Some((app_id, key_id.as_str().to_owned(), limit_key.clone()));
                limit_key
            }
        })
    }

    /// `MintAuthCode` per (app, external id).
    pub fn mint_per_external_id(app_id: AppId, external_id: &ExternalId) -> Self {
        Self::in_app(
            Scope::MintPerExternalId,
            app_id,
            external_id.as_str().as_bytes(),
        )
    }

    /// `CreateUser` per (app, device id).
    pub fn redeem_per_device(app_id: AppId, device_id: &str) -> Self {
        Self::in_app(Scope::RedeemPerDevice, app_id, device_id.as_bytes())
    }

    /// `GetInstallStatus` and `ResetInstall` per install token: pass the
    /// token's text or its stored hash, the same one every time.
    pub fn install_per_token(token: &[u8]) -> Self {
        Self::alone(Scope::InstallPerToken, token)
    }

    /// Failed credentials per client address. An IPv6 address counts by its
    /// /64, which one client usually holds whole.
    /// Remembered per thread for the address last asked about, as every
    /// call of a connection comes from one.
    pub fn failed_auth_per_address(address: IpAddr) -> Self {
        thread_local! {
            static LAST: RefCell<Option<(IpAddr, LimitKey)>> = const { RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| match last {
            Some((known, limit_key)) if *known == address => limit_key.clone(),
            _ => {
                let limit_key = Self::address_key(address);
                *last = Some((address, limit_key.clone()));
                limit_key
            }
        })
    }

    fn address_key(address: IpAddr) -> Self {
        let bytes = match address {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.octets().to_vec(),
                None => v6.octets()[..8].to_vec(),
            },
        };
        Self::alone(Scope::FailedAuthPerAddress, &bytes)
    }

    /// A subject inside an app: its keys share the app's slot.
    fn in_app(scope: Scope, app_id: AppId, subject: &[u8]) -> Self {
        let app = app_id.0.as_bytes();
        Self {
            scope,
            slot: app_slot(app_id),
            subject: truncated(&digest(scope.name().as_bytes(), &[app, subject])),
        }
    }

    /// A subject of its own: its slot is one of 256 buckets chosen by the
    /// subject, so that subjects spread over a Redis Cluster and yet the
    /// counts of many can be written together, one script per bucket
    /// ([`super::write_behind`]).
    fn alone(scope: Scope, subject: &[u8]) -> Self {
        let hash = digest(scope.name().as_bytes(), &[subject]);
        Self {
            scope,
            slot: truncated(&digest(b"slot", &[scope.name().as_bytes(), &hash[..1]])),
            subject: truncated(&hash),
        }
    }

    /// The scope this key counts.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The Redis key under `key_prefix`.
    pub fn redis_key(&self, key_prefix: &str) -> String {
        let scope = self.scope.name();
        let mut key = String::with_capacity(
            key_prefix.len() + "rl:".len() + TAG_LEN + 1 + scope.len() + 1 + 2 * 16,
        );
        key.push_str(key_prefix);
        key.push_str("rl:");
        push_tag(&mut key, &self.slot);
        key.push(':');
        key.push_str(scope);
        key.push(':');
        push_lower_hex(&mut key, &self.subject);
        key
    }

    /// The hash tag this key's slot follows, `{…}` included: any other key
    /// written in the same script (a minted code) must carry it too for a
    /// Redis Cluster to accept the script.
    pub fn hash_tag(&self) -> String {
        let mut tag = String::with_capacity(TAG_LEN);
        push_tag(&mut tag, &self.slot);
        tag
    }
}

/// The hash tag, `{…}` included, of every key that belongs to one app: its
/// limits and its auth codes. A mint checks the app's limits and stores its
/// code in one script, which a Redis Cluster runs only when all its keys
/// share a slot; registration, told the app by `CreateUser`, finds the
/// code under the same tag.
pub fn app_hash_tag(app_id: AppId) -> String {
    let mut tag = String::with_capacity(TAG_LEN);
    push_app_hash_tag(&mut tag, app_id);
    tag
}

/// Appends [`app_hash_tag`] to `text`.
pub fn push_app_hash_tag(text: &mut String, app_id: AppId) {
    push_tag(text, &app_slot(app_id));
}

/// The length of a hash tag: a slot in hex between braces.
const TAG_LEN: usize = 2 + 2 * 8;

/// Appends the hash tag of `slot`, `{…}` included, to `text`.
fn push_tag(text: &mut String, slot: &[u8; 8]) {
    text.push('{');
    push_lower_hex(text, slot);
    text.push('}');
}

/// The app's slot, remembered per thread for the app last asked about: a
/// mint needs it three times (two limits and the code's key), and a
/// replica serves few apps, so the hash is rarely computed again.
fn app_slot(app_id: AppId) -> [u8; 8] {
    thread_local! {
        static LAST: std::cell::Cell<Option<(AppId, [u8; 8])>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        Some((app, slot)) if app == app_id => slot,
        _ => {
            let slot = truncated(&digest(b"slot", &[app_id.0.as_bytes()]));
            last.set(Some((app_id, slot)));
            slot
        }
    })
}

/// SHA-256 over length-prefixed parts, so that (app, "ab") and
/// (app + "a", "b") never collide.
fn digest(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"devicelink/rate-limit/v1:");
    hasher.update(domain);
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn truncated<const N: usize>(hash: &[u8; 32]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&hash[..N]);
    out
}

/// A key and the rate it is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Whose state.
    pub key: LimitKey,
    /// The rate for this call (the environment's default or the app's own).
    pub rate: Rate,
}

impl Limit {
    /// `key` held to `rate`; `None` when the rate is off, so that a caller
    /// can collect `[Limit::new(..), Limit::new(..)].into_iter().flatten()`.
    pub fn new(key: LimitKey, rate: Option<Rate>) -> Option<Self> {
        rate.map(|rate| Self { key, rate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(n: u128) -> AppId {
        AppId(uuid::Uuid::from_u128(n))
    }

    fn external(text: &str) -> ExternalId {
        ExternalId::parse("external_id", text).expect("valid")
    }

    #[test]
    fn keys_are_hash_tagged_bounded_and_hide_the_subject() {
        let long_id = "x".repeat(256);
        let key = LimitKey::mint_per_external_id(app(1), &external(&long_id)).redis_key("p:");
        assert!(key.starts_with("p:rl:{"), "{key}");
        assert!(!key.contains("xxxx"), "{key}");
        assert_eq!(key.len(), "p:rl:{}:mint_per_external_id:".len() + 16 + 32);
        let device = LimitKey::redeem_per_device(app(1), "device-1234").redis_key("");
        assert!(!device.contains("device-1234"));
    }

    #[test]
    fn keys_of_one_app_share_a_slot_and_nothing_else() {
        let key_id = KeyId::parse("abcdefghijklmnop").expect("a key id");
        let by_ext = LimitKey::mint_per_external_id(app(1), &external("u"));
        let by_device = LimitKey::redeem_per_device(app(1), "u");
        assert_eq!(by_ext.hash_tag(), by_device.hash_tag());
        assert_ne!(by_ext.redis_key(""), by_device.redis_key(""));
        assert_ne!(
            by_ext.hash_tag(),
            LimitKey::mint_per_external_id(app(2), &external("u")).hash_tag()
        );
        assert_ne!(
            by_ext,
            LimitKey::mint_per_external_id(app(2), &external("u"))
        );
        assert_eq!(
            LimitKey::mint_per_key(app(1), &key_id).hash_tag(),
            by_ext.hash_tag()
        );
        assert_eq!(app_hash_tag(app(1)), by_ext.hash_tag());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        let key = LimitKey::failed_auth_per_address;
        assert_eq!(key(one), key(same_64));
        assert_ne!(key(one), key(other_64));
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(key(v4), key(mapped));
        assert_ne!(key(v4), key("192.0.2.8".parse().expect("ip")));
    }

    #[test]
    fn remembered_keys_are_the_ones_computed_afresh() {
        let first = KeyId::parse("abcdefghijklmnop").expect("a key id");
        let second = KeyId::parse("bcdefghijklmnopq").expect("a key id");
        let fresh = |app_id: AppId, key_id: &KeyId| {
            LimitKey::in_app(Scope::MintPerKey, app_id, key_id.as_str().as_bytes())
        };
        // Each call changes what is remembered: app, then key, then back.
        for (app_id, key_id) in [
            (app(1), &first),
            (app(1), &first),
            (app(2), &first),
            (app(2), &second),
            (app(1), &first),
        ] {
            assert_eq!(
                LimitKey::mint_per_key(app_id, key_id),
                fresh(app_id, key_id)
            );
        }
        for text in [
            "192.0.2.7",
            "192.0.2.7",
            "192.0.2.8",
            "2001:db8::1",
            "192.0.2.7",
        ] {
            let address: IpAddr = text.parse().expect("ip");
            assert_eq!(
                LimitKey::failed_auth_per_address(address),
                LimitKey::address_key(address)
            );
        }
        for n in [1, 1, 2, 1] {
            assert_eq!(
                app_slot(app(n)),
                truncated(&digest(b"slot", &[app(n).0.as_bytes()]))
            );
        }
    }

    #[test]
    fn an_off_rate_makes_no_limit() {
        let key = LimitKey::install_per_token(b"token");
        assert!(Limit::new(key.clone(), None).is_none());
        let rate = Rate::parse_setting("1/s").expect("parses");
        assert!(Limit::new(key, rate).is_some());
    }
}

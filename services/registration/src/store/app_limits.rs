//! An app's own rate limits, as operators set them (`SetAppLimits`) and
//! the `apps` table stores them: one text column per scope.

use devicelink_shared::config::LimitsConfig;
use devicelink_shared::limits::{Rate, Scope};

use crate::error::StoreError;

/// An app's own setting for one limit, in place of the deployment's
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOverride {
    /// This rate.
    Rate(Rate),
    /// No limit for this app.
    Off,
}

impl LimitOverride {
    /// Parses the operators' syntax: a rate as the `RATE_LIMIT_*`
    /// variables write it, or `off`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Rate::parse_setting(text)?.map_or(Self::Off, Self::Rate))
    }

    /// The rate applied; `None` when off.
    pub fn rate(self) -> Option<Rate> {
        match self {
            Self::Rate(rate) => Some(rate),
            Self::Off => None,
        }
    }
}

impl std::fmt::Display for LimitOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rate(rate) => rate.fmt(f),
            Self::Off => f.write_str("off"),
        }
    }
}

/// An app's own rate limits, one per scope whose subject names the app;
/// `None` keeps the deployment's default. Install-token and
/// failed-credential limits have none: their subject (a token, an address)
/// does not name an app until it has been looked up, and the limit must
/// hold before that lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppLimits {
    /// `MintAuthCode` per API key.
    pub mint_per_key: Option<LimitOverride>,
    /// `MintAuthCode` per external id.
    pub mint_per_external_id: Option<LimitOverride>,
    /// `CreateUser` per device.
    pub redeem_per_device: Option<LimitOverride>,
}

impl AppLimits {
    /// The scopes an app may override, in a stable order.
    pub const SCOPES: [Scope; 3] = [
        Scope::MintPerKey,
        Scope::MintPerExternalId,
        Scope::RedeemPerDevice,
    ];

    /// The app's own setting for `scope`; `None` for a scope it cannot
    /// override or does not.
    pub fn get(&self, scope: Scope) -> Option<LimitOverride> {
        match scope {
            Scope::MintPerKey => self.mint_per_key,
            Scope::MintPerExternalId => self.mint_per_external_id,
            Scope::RedeemPerDevice => self.redeem_per_device,
            Scope::InstallPerToken | Scope::FailedAuthPerAddress => None,
        }
    }

    /// The rate applied to the app for `scope`: its own where set, else
    /// the deployment's default.
    pub fn rate(&self, scope: Scope, defaults: &LimitsConfig) -> Option<Rate> {
        self.get(scope)
            .map_or_else(|| defaults.rate(scope), LimitOverride::rate)
    }

    /// The stored columns, in [`Self::SCOPES`] order.
    pub(super) fn to_columns(self) -> [Option<String>; 3] {
        Self::SCOPES.map(|scope| self.get(scope).map(|setting| setting.to_string()))
    }

    /// Reads the stored columns `first..first + 3` of `row`.
    pub(super) fn from_columns(
        row: &tokio_postgres::Row,
        first: usize,
    ) -> Result<Self, StoreError> {
        let column = |offset: usize| -> Result<Option<LimitOverride>, StoreError> {
            let text: Option<String> = row.try_get(first + offset)?;
            text.map(|text| {
                LimitOverride::parse(&text).map_err(|error| {
                    StoreError::internal(format!("a stored app limit does not parse: {error}"))
                })
            })
            .transpose()
        };
        Ok(Self {
            mint_per_key: column(0)?,
            mint_per_external_id: column(1)?,
            redeem_per_device: column(2)?,
        })
    }
}

//! OpenAPI links: which value of a response feeds which later call, so
//! that a client (and schemathesis's stateful phase) can chain the calls.
//! The install token cannot be linked: it travels as the `authorization`
//! credential, which no operation declares as a parameter.

use serde_json::{Map, Value, json};

/// One link: from a successful `from` to `to`, with `to`'s path
/// parameters or body fields taken from `from`'s response body.
struct Link {
    from: &'static str,
    to: &'static str,
    /// Path parameters of `to`, each from a field of the response.
    parameters: &'static [(&'static str, &'static str)],
    /// Body fields of `to`, each from a field of the response.
    body: &'static [(&'static str, &'static str)],
    description: &'static str,
}

const APP_ID: &[(&str, &str)] = &[("path.app_id", "app_id")];

const LINKS: &[Link] = &[
    Link {
        from: "AuthCodeService_MintAuthCode",
        to: "RegistrationService_CreateUser",
        parameters: &[],
        body: &[("auth_code", "auth_code"), ("app_id", "app_id")],
        description: "The minted code is redeemed on a device, with the app it is bound to.",
    },
    Link {
        from: "AdminService_CreateApp",
        to: "AdminService_CreateApiKey",
        parameters: APP_ID,
        body: &[],
        description: "A key of the new app.",
    },
    Link {
        from: "AdminService_CreateApp",
        to: "AdminService_ListApiKeys",
        parameters: APP_ID,
        body: &[],
        description: "The new app's keys.",
    },
    Link {
        from: "AdminService_CreateApp",
        to: "AdminService_GetApp",
        parameters: APP_ID,
        body: &[],
        description: "The new app.",
    },
    Link {
        from: "AdminService_CreateApp",
        to: "AdminService_SetSdkConfig",
        parameters: APP_ID,
        body: &[],
        description: "The new app's SDK configuration.",
    },
    Link {
        from: "AdminService_CreateApp",
        to: "AdminService_SetAppLimits",
        parameters: APP_ID,
        body: &[],
        description: "The new app's rate limits.",
    },
    Link {
        from: "AdminService_CreateApp",
        to: "AdminService_SetAppSecurity",
        parameters: APP_ID,
        body: &[],
        description: "The new app's security settings.",
    },
    Link {
        from: "AdminService_CreateApiKey",
        to: "AdminService_RevokeApiKey",
        parameters: &[("path.key_id", "key_id")],
        body: &[],
        description: "The new key is revoked.",
    },
];

/// The links of operation `from`'s successful response, by name.
pub(super) fn links_from(from: &str) -> Option<Value> {
    let mut links = Map::new();
    for link in LINKS.iter().filter(|link| link.from == from) {
        let expression = |field: &str| json!(format!("$response.body#/{field}"));
        let mut value = json!({"operationId": link.to, "description": link.description});
        if !link.parameters.is_empty() {
            let parameters: Map<String, Value> = link
                .parameters
                .iter()
                .map(|(name, field)| ((*name).to_owned(), expression(field)))
                .collect();
            value["parameters"] = Value::Object(parameters);
        }
        if !link.body.is_empty() {
            let body: Map<String, Value> = link
                .body
                .iter()
                .map(|(name, field)| ((*name).to_owned(), expression(field)))
                .collect();
            value["requestBody"] = Value::Object(body);
        }
        links.insert(
            link.to.trim_start_matches(|c| c != '_')[1..].to_owned(),
            value,
        );
    }
    (!links.is_empty()).then_some(Value::Object(links))
}

/// Every operation a link names, to check that each exists.
pub(super) fn linked_operations() -> impl Iterator<Item = &'static str> {
    LINKS.iter().flat_map(|link| [link.from, link.to])
}

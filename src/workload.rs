//! Workload identity recipes: builders set up as each platform documents it, from the
//! environment or the credential file the platform gives the pod. Each returns a builder, so
//! that anything else (a scope, a timeout, a cache policy) can still be set.
//!
//! | platform | here | what it reads |
//! |---|---|---|
//! | Azure / Entra workload identity | [`azure`], [`azure_from`] | `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST` |
//! | Google workload identity federation | [`google_external_account`] | an `external_account` credential file (`GOOGLE_APPLICATION_CREDENTIALS`) |
//!
//! Keycloak's federated client authentication with Kubernetes service-account tokens, and a
//! SPIFFE JWT-SVID file, need no recipe of their own: they are
//! [`client_assertion_file`](crate::client_credentials::ClientCredentialsBuilder::client_assertion_file)
//! (see the README's recipes).

use std::path::PathBuf;

use serde::Deserialize;

use crate::client_auth::external::{read_file, Kind};
use crate::client_credentials::ClientCredentialsBuilder;
use crate::token_exchange::{TokenExchange, TokenExchangeBuilder, TokenType};
use crate::{ClientCredentials, ConfigError};

/// Where Entra ID lives unless `AZURE_AUTHORITY_HOST` says otherwise.
pub const AZURE_PUBLIC_CLOUD: &str = "https://login.microsoftonline.com/";

/// Azure / Entra workload identity from the variables the workload identity webhook injects
/// into the pod (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, and
/// `AZURE_AUTHORITY_HOST` for clouds other than the public one): the client credentials
/// grant at `{authority}{tenant}/oauth2/v2.0/token`, the projected service-account token as
/// the client assertion, read at every token request (the kubelet rotates it). Add the
/// `scope` of the API, e.g. `https://management.azure.com/.default`.
///
/// ```no_run
/// # fn demo() -> Result<(), tower_oauth2::ConfigError> {
/// let credentials = tower_oauth2::workload::azure()?
///     .scope("https://storage.azure.com/.default")
///     .build()?;
/// # let _ = credentials;
/// # Ok(())
/// # }
/// ```
pub fn azure() -> Result<ClientCredentialsBuilder, ConfigError> {
    azure_from(|name| std::env::var(name).ok())
}

/// [`azure`], reading the variables with `var` instead of from the environment (for tests,
/// or configuration that holds them elsewhere).
pub fn azure_from(
    var: impl Fn(&str) -> Option<String>,
) -> Result<ClientCredentialsBuilder, ConfigError> {
    let required = |name: &'static str| {
        var(name)
            .filter(|value| !value.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    name,
                    format!(
                    "{name} is not set: is the pod labelled azure.workload.identity/use=true and \
                     its service account annotated with azure.workload.identity/client-id?"
                ),
                )
            })
    };
    let client_id = required("AZURE_CLIENT_ID")?;
    let tenant_id = required("AZURE_TENANT_ID")?;
    let token_file = required("AZURE_FEDERATED_TOKEN_FILE")?;
    let mut authority = var("AZURE_AUTHORITY_HOST")
        .filter(|host| !host.trim().is_empty())
        .unwrap_or_else(|| AZURE_PUBLIC_CLOUD.to_owned());
    if !authority.ends_with('/') {
        authority.push('/');
    }
    Ok(ClientCredentials::builder()
        .token_url(format!("{authority}{}/oauth2/v2.0/token", tenant_id.trim()))
        .client_id(client_id.trim())
        .client_assertion_file(PathBuf::from(token_file.trim())))
}

/// Google's STS token endpoint.
pub const GOOGLE_STS: &str = "https://sts.googleapis.com/v1/token";

/// The scope Google recommends for federated tokens.
pub const GOOGLE_CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Google workload identity federation from an `external_account` credential file (what
/// `gcloud iam workload-identity-pools create-cred-config` writes, and
/// `GOOGLE_APPLICATION_CREDENTIALS` names): a token exchange at Google's STS, the subject
/// token read from `credential_source.file` at every exchange (`format.type` `text`, or
/// `json` with `subject_token_field_name`), no client authentication, scope
/// `cloud-platform` unless the file says otherwise.
///
/// Service-account impersonation (`service_account_impersonation_url`) is a second call this
/// recipe does not make: it is refused, saying so; grant the federated principal access to
/// the resources directly, as Google recommends.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let file = std::fs::read_to_string(std::env::var("GOOGLE_APPLICATION_CREDENTIALS")?)?;
/// let exchange = tower_oauth2::workload::google_external_account(&file)?.build()?;
/// # let _ = exchange;
/// # Ok(())
/// # }
/// ```
pub fn google_external_account(json: &str) -> Result<TokenExchangeBuilder, ConfigError> {
    let refuse = |message: String| ConfigError::new("external_account", message);
    let config: ExternalAccount = serde_json::from_str(json).map_err(|e| {
        refuse(format!(
            "not an external_account credential file: {}",
            // serde's message names the field and position, never a value.
            e
        ))
    })?;
    if config.kind != "external_account" {
        return Err(refuse(format!(
            "the credential file's type is {:?}, not \"external_account\"",
            config.kind
        )));
    }
    if config.service_account_impersonation_url.is_some() {
        return Err(refuse(
            "service_account_impersonation_url is not supported: grant the workload identity \
             pool's principal access directly, or impersonate with your own second step"
                .to_owned(),
        ));
    }
    let Some(source) = config.credential_source else {
        return Err(refuse(
            "credential_source is missing (only file-sourced credentials are supported)".to_owned(),
        ));
    };
    let Some(file) = source.file else {
        return Err(refuse(
            "credential_source has no `file`: only file-sourced credentials are supported (not \
             url, executable or aws)"
                .to_owned(),
        ));
    };
    let token_type = TokenType::from_uri(
        config
            .subject_token_type
            .as_deref()
            .unwrap_or(TokenType::Jwt.uri()),
    );
    let builder = TokenExchange::builder()
        .token_url(config.token_url.unwrap_or_else(|| GOOGLE_STS.to_owned()))
        .audience(config.audience)
        .requested_token_type(TokenType::AccessToken)
        .scope(GOOGLE_CLOUD_PLATFORM_SCOPE);
    let format = source.format.unwrap_or_default();
    Ok(match format.kind.as_deref() {
        None | Some("text") => builder.subject_token_file(file, token_type),
        Some("json") => {
            let field = format.subject_token_field_name.ok_or_else(|| {
                refuse("credential_source.format json needs subject_token_field_name".to_owned())
            })?;
            let path = PathBuf::from(file);
            builder.subject_token_fn(move || json_field(path.clone(), field.clone()), token_type)
        }
        Some(other) => {
            return Err(refuse(format!(
                "credential_source.format.type {other:?} is not supported (text or json)"
            )))
        }
    })
}

/// The string field `field` of the JSON file at `path`, for a `json`-format credential source.
/// Read with the guards of every credential file (regular files only, a size limit); its
/// errors are found locally, so the cache reads the file again at the next request.
async fn json_field(path: PathBuf, field: String) -> Result<String, crate::error::BoxError> {
    let shown = path.display().to_string();
    let local = |message: String, transient: bool| {
        Box::new(crate::Error::credential(message, transient).found_locally())
    };
    let text = read_file(&path, Kind::SUBJECT_TOKEN).map_err(|e| Box::new(e.found_locally()))?;
    // A file being rewritten may be cut short: read again at the next request.
    let document: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|_| {
            local(
                format!("the subject token file {shown} is not a JSON object"),
                true,
            )
        })?;
    match document.get(&field) {
        Some(serde_json::Value::String(token)) => Ok(token.clone()),
        _ => Err(local(
            format!("the subject token file {shown} has no string field {field:?}"),
            false,
        )),
    }
}

#[derive(Deserialize)]
struct ExternalAccount {
    #[serde(rename = "type")]
    kind: String,
    audience: String,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    service_account_impersonation_url: Option<String>,
    credential_source: Option<CredentialSource>,
}

#[derive(Deserialize)]
struct CredentialSource {
    file: Option<String>,
    format: Option<Format>,
}

#[derive(Deserialize, Default)]
struct Format {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject_token_field_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_needs_its_variables_and_names_the_missing_one() {
        let error =
            azure_from(|name| (name != "AZURE_TENANT_ID").then(|| "x".to_owned())).unwrap_err();
        assert_eq!(error.setting(), "AZURE_TENANT_ID");
    }

    #[test]
    fn google_refuses_what_it_cannot_do() {
        let impersonating = r#"{"type":"external_account","audience":"a",
            "service_account_impersonation_url":"https://iam","credential_source":{"file":"/t"}}"#;
        assert!(google_external_account(impersonating).is_err());
        let url_sourced = r#"{"type":"external_account","audience":"a",
            "credential_source":{"url":"http://metadata"}}"#;
        let error = google_external_account(url_sourced).err().unwrap();
        assert!(error.to_string().contains("only file-sourced"), "{error}");
        assert!(google_external_account(r#"{"type":"service_account","audience":"a"}"#).is_err());
    }
}

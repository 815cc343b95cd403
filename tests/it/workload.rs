//! The workload identity recipes (src/workload.rs and the README's recipes), each against a
//! token server on loopback that checks what that provider documents it checks, with the
//! workload token signed by a separate issuer key (the cluster's, the SPIFFE trust domain's).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::{workload, ClientCredentials, TokenSource};

use crate::support::issuer::{Issuer, Mounted};
use crate::support::{json as json_response, last};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SA: &str = "system:serviceaccount:shop:orders";

/// A provider emulated by `check`: `Ok(body)` is a 200 token response, `Err(why)` a 400/401.
async fn provider(
    check: impl Fn(&Received) -> Result<Value, (StatusCode, &'static str)> + Send + Sync + 'static,
) -> TokenServer {
    TokenServer::builder()
        .script(move |request, _| {
            let response: Response<Full<Bytes>> = match check(&request) {
                Ok(body) => json_response(StatusCode::OK, body),
                Err((status, code)) => json_response(status, json!({ "error": code })),
            };
            async move { Some(response) }
        })
        .start()
        .await
        .unwrap()
}

fn base(server: &TokenServer) -> String {
    format!("http://{}/", server.addr())
}

#[tokio::test]
async fn azure_workload_identity_from_its_environment() {
    let cluster = Issuer::new("https://oidc.prod-aks.azure.com/tenant/cluster/");
    let verifier = cluster.clone();
    let server = provider(move |request| {
        let form = request.form();
        let bad = |code| Err((StatusCode::BAD_REQUEST, code));
        if request.uri.path() != "/72f988bf-tenant/oauth2/v2.0/token" {
            return Err((StatusCode::NOT_FOUND, "not_found"));
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials")
            || !form.get("scope").is_some_and(|s| s.ends_with("/.default"))
        {
            return bad("invalid_request");
        }
        // The federated identity credential: issuer, subject and audience must match.
        let claims = form
            .get("client_assertion")
            .filter(|_| form.get("client_assertion_type").map(String::as_str) == Some(JWT_BEARER))
            .filter(|_| form.get("client_id").map(String::as_str) == Some("app-client-id"))
            .and_then(|jwt| verifier.verify(jwt, "api://AzureADTokenExchange"));
        match claims {
            Some(claims) if claims["sub"] == SA => Ok(json!({
                "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                "access_token": "entra-token",
            })),
            _ => Err((StatusCode::UNAUTHORIZED, "invalid_client")),
        }
    })
    .await;
    let mounted = Mounted::new();
    let token_file = mounted.write(
        "azure-identity-token",
        &cluster.token(SA, "api://AzureADTokenExchange", 3600, json!({})),
    );
    let authority = base(&server);
    let env = move |name: &str| -> Option<String> {
        match name {
            "AZURE_CLIENT_ID" => Some("app-client-id".into()),
            "AZURE_TENANT_ID" => Some("72f988bf-tenant".into()),
            "AZURE_FEDERATED_TOKEN_FILE" => Some(token_file.display().to_string()),
            "AZURE_AUTHORITY_HOST" => Some(authority.clone()),
            _ => None,
        }
    };
    let credentials = workload::azure_from(env)
        .unwrap()
        .scope("https://storage.azure.com/.default")
        .build()
        .unwrap();
    assert_eq!(credentials.token().await.unwrap().secret(), "entra-token");
    assert_eq!(
        last(&server).form()["scope"],
        "https://storage.azure.com/.default"
    );
}

/// Google's STS, as its token exchange documentation describes it.
async fn google_sts(cluster: &Issuer, provider_name: &'static str) -> TokenServer {
    let verifier = cluster.clone();
    provider(move |request| {
        let form = request.form();
        let expected = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", provider_name),
            ("scope", "https://www.googleapis.com/auth/cloud-platform"),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ];
        if request.uri.path() != "/v1/token"
            || request.header("authorization").is_some()
            || expected
                .iter()
                .any(|(name, value)| form.get(*name).map(String::as_str) != Some(*value))
        {
            return Err((StatusCode::BAD_REQUEST, "invalid_request"));
        }
        // The provider's allowed audience: its full resource name, as https.
        let audience = format!("https:{provider_name}");
        match form
            .get("subject_token")
            .and_then(|jwt| verifier.verify(jwt, &audience))
        {
            Some(_) => Ok(json!({
                "access_token": "ya29.federated",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            })),
            None => Err((StatusCode::BAD_REQUEST, "invalid_grant")),
        }
    })
    .await
}

#[tokio::test]
async fn google_workload_identity_federation_from_an_external_account_file() {
    const PROVIDER: &str =
        "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/k8s";
    let cluster =
        Issuer::new("https://container.googleapis.com/v1/projects/p/locations/l/clusters/c");
    let server = google_sts(&cluster, PROVIDER).await;
    let mounted = Mounted::new();
    let jwt = cluster.token(SA, &format!("https:{PROVIDER}"), 3600, json!({}));
    let text_file = mounted.write("token", &jwt);
    let json_file = mounted.write("token.json", &json!({ "id_token": jwt }).to_string());
    for (file, format) in [
        (text_file, json!({"type": "text"})),
        (
            json_file,
            json!({"type": "json", "subject_token_field_name": "id_token"}),
        ),
    ] {
        let config = json!({
            "type": "external_account",
            "audience": PROVIDER,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}v1/token", base(&server)),
            "credential_source": { "file": file, "format": format },
        });
        let exchange = workload::google_external_account(&config.to_string())
            .unwrap()
            .build()
            .unwrap();
        let token = exchange.token().await.unwrap();
        assert_eq!(token.secret(), "ya29.federated");
        assert_eq!(
            token.issued_token_type(),
            Some("urn:ietf:params:oauth:token-type:access_token")
        );
    }
}

#[tokio::test]
async fn keycloak_federated_client_authentication_with_a_kubernetes_token() {
    let cluster = Issuer::new("https://kubernetes.default.svc.cluster.local");
    let verifier = cluster.clone();
    let server = provider(move |request| {
        let form = request.form();
        if request.uri.path() != "/realms/shop/protocol/openid-connect/token" {
            return Err((StatusCode::NOT_FOUND, "not_found"));
        }
        // The client's federated subject must be the service account; the audience the realm.
        let claims = form
            .get("client_assertion")
            .filter(|_| form.get("client_assertion_type").map(String::as_str) == Some(JWT_BEARER))
            .and_then(|jwt| verifier.verify(jwt, "https://keycloak.example.com/realms/shop"));
        match claims {
            Some(claims) if claims["sub"] == SA => Ok(json!({
                "access_token": "kc-token", "expires_in": 300, "refresh_expires_in": 0,
                "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email",
            })),
            _ => Err((StatusCode::UNAUTHORIZED, "invalid_client")),
        }
    })
    .await;
    let mounted = Mounted::new();
    // A projected volume with `audience: https://keycloak.example.com/realms/shop`.
    let token = mounted.write(
        "keycloak-token",
        &cluster.token(
            SA,
            "https://keycloak.example.com/realms/shop",
            3600,
            json!({}),
        ),
    );
    let credentials = ClientCredentials::builder()
        .token_url(format!(
            "{}realms/shop/protocol/openid-connect/token",
            base(&server)
        ))
        .client_id("orders")
        .client_assertion_file(token)
        .build()
        .unwrap();
    assert_eq!(
        TokenSource::token(&credentials).await.unwrap().secret(),
        "kc-token"
    );
}

#[tokio::test]
async fn a_spiffe_jwt_svid_file_as_the_client_assertion() {
    let trust_domain = Issuer::new("https://spire.example.org");
    let checker = trust_domain.clone();
    let server = TokenServer::builder()
        .client("spiffe://example.org/ns/shop/sa/orders", "")
        .client_assertions(move |jwt| {
            checker
                .verify(jwt, "https://idp.example.org")
                .is_some_and(|claims| claims["sub"] == "spiffe://example.org/ns/shop/sa/orders")
        })
        .start()
        .await
        .unwrap();
    let mounted = Mounted::new();
    // What spiffe-helper writes (jwt_svids: jwt_svid_file_name).
    let svid = mounted.write(
        "jwt_svid.token",
        &trust_domain.token(
            "spiffe://example.org/ns/shop/sa/orders",
            "https://idp.example.org",
            300,
            json!({}),
        ),
    );
    let credentials = ClientCredentials::builder()
        .token_url(server.url())
        .client_id("spiffe://example.org/ns/shop/sa/orders")
        .client_assertion_file(svid)
        .build()
        .unwrap();
    credentials.token().await.unwrap();
    assert_eq!(
        server.last_client_auth(),
        Some(tower_oauth2::test_util::ClientAuth::Assertion)
    );
}

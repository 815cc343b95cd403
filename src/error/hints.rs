//! Every "what to fix" the crate can attach to an error, in one place, so that they read
//! alike and a reader finds them all here. Each is one line of prose, without a line break.

/// A 404 or 405 from the token URL.
pub(crate) const CHECK_TOKEN_URL: &str = "check token_url: the server has no token endpoint at \
     this path (for an issuer URL, its metadata at /.well-known/openid-configuration names the \
     token_endpoint)";

/// A 2xx body that is not a token response at all (an HTML page, say).
pub(crate) const NOT_A_TOKEN_ENDPOINT: &str = "this URL does not look like a token endpoint: \
     check token_url (the token endpoint, not the issuer or an authorization page)";

/// An `https://` URL pointing at a plain HTTP port.
pub(crate) const PLAIN_HTTP_PORT: &str = "check the port and scheme of token_url: an https:// \
     URL pointing at a plain HTTP port";

/// Metadata that names another issuer, or none.
pub(crate) const CHECK_THE_ISSUER: &str = "check the issuer: it must be exactly the `issuer` \
     of the provider's metadata (scheme, host, path, trailing slash)";

/// No metadata at either well-known location.
pub(crate) const NO_METADATA: &str =
    "check the issuer URL, or give the token endpoint with .token_url(..)";

/// An https issuer whose metadata names a plain-http token endpoint.
pub(crate) const INTERNAL_TOKEN_ENDPOINT: &str = "the identity provider publishes an internal \
     URL (behind a TLS-terminating proxy, tell it its public https URL), or give the token \
     endpoint with .token_url(..)";

/// `invalid_dpop_proof` from the token endpoint.
pub(crate) const DPOP_PROOF_REFUSED: &str = "the token endpoint refused the DPoP proof: check \
     that it accepts the key's algorithm (most accept ES256; some only ES256 and EdDSA) and that \
     this machine's clock is right (proofs carry the time they were made)";

/// `invalid_client` to `client_secret_basic`.
pub(crate) const INVALID_CLIENT_BASIC: &str = "check the client id and secret; if they are \
     right, the server may want them in the body: .auth_style(AuthStyle::Form)";

/// `invalid_client` to a secret in the body.
pub(crate) const INVALID_CLIENT_BODY: &str = "check the client id and secret; if they are \
     right, the server may want them in an HTTP Basic header: .auth_style(AuthStyle::Basic)";

/// `invalid_client` to `tls_client_auth`.
pub(crate) const INVALID_CLIENT_TLS: &str = "check the client id and that the identity \
     provider has this client's certificate (or its subject) registered for tls_client_auth";

/// `invalid_client` to a client assertion.
pub(crate) const INVALID_CLIENT_ASSERTION: &str = "check the client id, that the identity \
     provider holds this client's public key (or secret) under the same key id, and that this \
     machine's clock is right: the assertion is valid for a short time from now";

/// `invalid_client` to a client assertion made elsewhere (a mounted workload token).
pub(crate) const INVALID_CLIENT_FEDERATED: &str = "check that the identity provider trusts the \
     issuer of the assertion (a federated credential whose issuer, subject and audience match \
     the token's iss, sub and aud) and that the client id is the one it is registered under";

/// `invalid_client` to a client that sends no credentials.
pub(crate) const INVALID_CLIENT_NONE: &str = "this client sends no credentials and the server \
     wants client authentication: give a client secret, an assertion or another method";

//! `ClientCredentials` (src/client_credentials/, src/client_auth/): the token request on the
//! wire, its client authentication, discovery, TLS, errors and the inherent API, against
//! endpoints on loopback.

/// The simplest use: a token fetched and cached.
mod smoke;

/// The crate's spec, case by case: request encoding, builder validation, response decoding.
mod conformance;

/// Every provider of shared/PROVIDERS.md, emulated as its documentation describes it.
mod providers;

/// The token endpoint found from the issuer's metadata (RFC 8414, OpenID Connect Discovery).
mod discovery;

/// `private_key_jwt` and `client_secret_jwt` (RFC 7523), checked by an independent verifier.
mod client_assertions;

/// Credentials made elsewhere: assertion files and closures, secret files, read per request.
mod made_elsewhere;

/// `private_key_jwt` with a key held elsewhere: the `Signer` trait (KMS, local key, failures).
mod signers;

/// Mutual-TLS client authentication (RFC 8705).
mod mtls;

/// An HTTPS token endpoint with a private CA.
mod tls;

/// Full error messages, compared as reviewed snapshots.
mod error_messages;

/// `ClientCredentials`'s inherent methods, without `TokenSource` in scope.
mod credentials_api;

/// `with_audience` / `with_scopes` siblings of one client registration.
mod siblings;

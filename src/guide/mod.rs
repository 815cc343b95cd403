//! The manual: recipes for each kind of client, and the reference on behaviour, security and
//! performance. Documentation only; nothing here is code you call. Every recipe compiles as a
//! doctest.
//!
//! | recipe | for |
//! |---|---|
//! | [`tonic`] | a tonic channel, and the gRPC codes callers see (feature `tonic`) |
//! | [`hyper_util`] | a hyper-util client, or any `tower::Service<http::Request<B>>` |
//! | [`axum`] | an axum service calling another API with a token |
//! | [`reqwest`] | reqwest through reqwest-middleware (feature `reqwest`) |
//! | [`fleet`] | one token for every instance of a service, through Redis (feature `redis`) |
//! | [`client_authentication`] | secrets, `private_key_jwt`, `client_secret_jwt`, mutual TLS, credentials made elsewhere |
//! | [`dpop`] | sender-constrained tokens: a proof by your key on every request (RFC 9449) |
//! | [`providers`] | Auth0, Okta, Entra ID, Keycloak, Cognito; discovery from an issuer |
//! | [`testing`] | your tests, against a real token endpoint on loopback (feature `test-util`) |
//!
//! | reference | what |
//! |---|---|
//! | [`behaviour`] | refresh ahead, runtimes, panics, backoff, rejected tokens, errors, proxies |
//! | [`security`] | what the crate guarantees about secrets, and how each guarantee is tested |
//! | [`performance`] | what a request costs, measured |
//! | [`metrics`] | the series the `metrics` feature reports |
//! | [`features`] | every Cargo feature, and which TLS features to pick |

pub mod tonic {
    #![doc = include_str!("tonic.md")]
}

pub mod hyper_util {
    #![doc = include_str!("hyper_util.md")]
}

pub mod axum {
    #![doc = include_str!("axum.md")]
}

pub mod reqwest {
    #![doc = include_str!("reqwest.md")]
}

pub mod fleet {
    #![doc = include_str!("fleet.md")]
}

pub mod client_authentication {
    #![doc = include_str!("client_authentication.md")]
}

pub mod dpop {
    #![doc = include_str!("dpop.md")]
}

pub mod providers {
    #![doc = include_str!("providers.md")]
}

pub mod testing {
    #![doc = include_str!("testing.md")]
}

pub mod behaviour {
    #![doc = include_str!("behaviour.md")]
}

pub mod security {
    #![doc = include_str!("security.md")]
}

pub mod performance {
    #![doc = include_str!("performance.md")]
}

pub mod metrics {
    #![doc = include_str!("metrics.md")]
}

pub mod features {
    #![doc = include_str!("features.md")]
}

//! tower-oauth2 with `rustls-no-provider`: the application's installed provider is the one used,
//! and without one `build()` fails with an error that says what to do.

use tower_oauth2::{client_auth::PrivateKeyJwt, ClientCredentials};

fn main() {
    let key_pem = rcgen::KeyPair::generate()
        .expect("a P-256 key")
        .serialize_pem();
    let with_secret = || {
        ClientCredentials::builder()
            .token_url("https://idp.example.com/oauth2/token")
            .client_id("app")
            .client_secret("secret")
            .build()
    };
    let with_key = || {
        ClientCredentials::builder()
            .token_url("https://idp.example.com/oauth2/token")
            .client_id("app")
            .private_key_jwt(PrivateKeyJwt::from_pem(&key_pem).expect("a PEM key"))
            .build()
    };

    for (what, built) in [("secret", with_secret()), ("private_key_jwt", with_key())] {
        let error = built.expect_err("no provider installed, no client");
        assert_eq!(
            error.setting(),
            "rustls::crypto::CryptoProvider",
            "{what}: {error}"
        );
        assert!(
            error.to_string().contains("install_default"),
            "{what}: the error says what to do: {error}"
        );
    }

    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .expect("install the provider");
    with_secret().expect("a client once a provider is installed");
    with_key().expect("private_key_jwt once a provider is installed");
    println!("without a provider: a clear error; with the installed one: both clients build");
}

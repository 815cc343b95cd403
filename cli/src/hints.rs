//! The crate's hints speak Rust (`.auth_style(AuthStyle::Form)`); an operator at a shell needs
//! the flag that does the same (`--auth-style form`). One table, so a new hint in the crate
//! that names a builder method is rewritten by adding one row.

/// Builder words in the crate's messages, and the command-line words that do the same.
const AS_FLAGS: &[(&str, &str)] = &[
    (".auth_style(AuthStyle::Form)", "--auth-style form"),
    (".auth_style(AuthStyle::Basic)", "--auth-style basic"),
    (".auth_style(AuthStyle::Json)", "--auth-style json"),
    (".token_url(..)", "--token-url"),
    ("check token_url", "check --token-url"),
    ("of token_url", "of --token-url"),
    (
        "pass it trimmed, e.g. .client_secret(secret.trim())",
        "remove it",
    ),
    ("pass it trimmed, e.g. .client_id(id.trim())", "remove it"),
    ("call .client_id(..)", "give --client-id"),
];

/// `text` with every builder word the table knows replaced by its command-line flag.
pub fn as_flags(text: &str) -> String {
    AS_FLAGS.iter().fold(text.to_owned(), |text, (rust, flag)| {
        text.replace(rust, flag)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn builder_methods_become_flags() {
        assert_eq!(
            super::as_flags("the server may want them in the body: .auth_style(AuthStyle::Form)"),
            "the server may want them in the body: --auth-style form"
        );
        assert_eq!(
            super::as_flags("check token_url: no token endpoint"),
            "check --token-url: no token endpoint"
        );
    }
}

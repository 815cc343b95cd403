//! The token-response decoder against arbitrary status, headers and body: it must never panic,
//! and what it returns must never contain the secret it was told to redact.
//!
//! `cargo fuzz run decode_token_response` from the repository root (see the README).
#![no_main]

use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 7] = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "text/plain",
    "text/html",
    "",
    "https://elsewhere.example/token",
];
const RETRY_AFTER: [&str; 4] = ["", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"];

fuzz_target!(|data: &[u8]| {
    let [low, high, selector, body @ ..] = data else {
        return;
    };
    // 100..=599, with 200 and the redirects common enough to reach every branch.
    let status = 100 + u16::from_le_bytes([*low, *high]) % 500;
    let selector = usize::from(*selector);
    let content_type = CONTENT_TYPES[selector % CONTENT_TYPES.len()];
    let retry_after = RETRY_AFTER[(selector / CONTENT_TYPES.len()) % RETRY_AFTER.len()];
    tower_oauth2::__fuzz_decode(status, content_type, retry_after, body);
});

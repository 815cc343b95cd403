//! Redis URLs as the store shows them: without the password, wherever the URL form puts it
//! (`redis://user:pass@host`, `redis+unix:///path?user=…&pass=…`).

/// Query parameters safe to show; every other value is replaced (`pass`, and whatever a later
/// redis version reads a secret from).
const SHOWN_PARAMETERS: &[&str] = &["db", "protocol", "user", "username"];

/// A Redis URL's shown form and the secrets it holds, to scrub them from any message that
/// might quote them (a parse error of the redis crate, say).
pub(super) struct Redacted {
    pub(super) shown: String,
    secrets: Vec<zeroize::Zeroizing<String>>,
}

impl Redacted {
    pub(super) fn new(url: &str) -> Self {
        let mut secrets = Vec::new();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Redacted {
                shown: "[not a URL]".to_owned(),
                secrets: vec![zeroize::Zeroizing::new(url.to_owned())],
            };
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        // Userinfo ends at the last `@` before the path.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let host = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, password)) => {
                    secrets.push(zeroize::Zeroizing::new(password.to_owned()));
                    if user.is_empty() {
                        format!("[password]@{host}")
                    } else {
                        format!("{user}:[password]@{host}")
                    }
                }
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_owned(),
        };
        let mut shown = format!("{scheme}://{host}{path}");
        if let Some(query) = query {
            let parameters: Vec<String> = query
                .split('&')
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if SHOWN_PARAMETERS.contains(&name) {
                        pair.to_owned()
                    } else {
                        secrets.push(zeroize::Zeroizing::new(value.to_owned()));
                        format!("{name}=[redacted]")
                    }
                })
                .collect();
            shown.push('?');
            shown.push_str(&parameters.join("&"));
        }
        // Percent-decoded forms too, as the redis crate would quote them.
        let decoded: Vec<_> = secrets
            .iter()
            .filter_map(|secret| {
                let decoded: String =
                    form_urlencoded::parse(format!("x={}", secret.as_str()).as_bytes())
                        .next()
                        .map(|(_, value)| value.into_owned())?;
                (decoded != secret.as_str()).then(|| zeroize::Zeroizing::new(decoded))
            })
            .collect();
        secrets.extend(decoded);
        secrets.retain(|secret| !secret.is_empty());
        Redacted { shown, secrets }
    }

    /// Also scrub `other`'s secrets (another node of the same cluster).
    #[cfg(feature = "redis-cluster")]
    pub(super) fn absorb(&mut self, other: Redacted) {
        self.secrets.extend(other.secrets);
    }

    /// `message` with every secret of the URL replaced.
    pub(super) fn scrub(&self, message: &str) -> String {
        self.secrets
            .iter()
            .fold(message.to_owned(), |message, secret| {
                message.replace(secret.as_str(), "[redacted]")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    #[test]
    fn no_form_of_url_shows_its_password() {
        for (url, shown) in [
            (
                "redis://:hunter2@host:6379/0",
                "redis://[password]@host:6379/0",
            ),
            (
                "rediss://app:hunter2@host:6380/",
                "rediss://app:[password]@host:6380/",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&user=app&pass=hunter2",
                "redis+unix:///run/redis.sock?db=1&user=app&pass=[redacted]",
            ),
            (
                "unix:///run/redis.sock?pass=hunter2",
                "unix:///run/redis.sock?pass=[redacted]",
            ),
            ("hunter2", "[not a URL]"),
            ("redis://app@host/", "redis://app@host/"),
        ] {
            let redacted = Redacted::new(url);
            assert_eq!(redacted.shown, shown);
            assert_eq!(
                redacted.scrub(&format!("bad {url}")),
                format!("bad {}", redacted.scrub(url))
            );
            assert!(!redacted.scrub(url).contains("hunter2"), "{url}");
        }
        assert!(!Redacted::new("redis://:hunt%40er@h/")
            .scrub("hunt@er")
            .contains("hunt@er"));
    }
}

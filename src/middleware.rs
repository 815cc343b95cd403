//! [`BearerAuthMiddleware`]: the layer's behaviour for `reqwest` clients, through
//! `reqwest-middleware` (enabled by the `reqwest` feature).

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderValue, StatusCode};
use reqwest_middleware::{Middleware, Next};

use crate::cache::report_rejected;
use crate::TokenCache;

/// Adds `Authorization: Bearer …` to every request of a [`reqwest_middleware`] client, from
/// the same cache as [`BearerAuthLayer`](crate::BearerAuthLayer): one token request for any
/// number of concurrent requests, refreshed ahead of expiry, and a `401` drops exactly the
/// token that request carried.
///
/// A request that already has an `Authorization` header is sent as it is. When no token can
/// be had, the request is not sent and fails with [`reqwest_middleware::Error::Middleware`],
/// which downcasts to [`tower_oauth2::Error`](crate::Error).
///
/// With [`replay_once_on_401`](Self::replay_once_on_401), a request rejected with `401` is
/// sent once more with a new token, if its body can be cloned (streaming bodies cannot).
///
/// ```no_run
/// use tower_oauth2::{BearerAuthMiddleware, ClientCredentials};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let credentials = ClientCredentials::builder()
///     .token_url("https://idp.example.com/oauth/token")
///     .client_id("my-service")
///     .client_secret(std::env::var("CLIENT_SECRET")?)
///     .build()?;
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(BearerAuthMiddleware::new(credentials.clone()))
///     .build();
///
/// let orders = client.get("https://orders.example.com/v1/orders").send().await?;
/// println!("{}", orders.status());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BearerAuthMiddleware {
    cache: TokenCache,
    replay: bool,
}

impl BearerAuthMiddleware {
    /// Tokens from `cache`, or anything that converts into one, as for
    /// [`BearerAuthLayer::new`](crate::BearerAuthLayer::new).
    pub fn new(cache: impl Into<TokenCache>) -> Self {
        BearerAuthMiddleware {
            cache: cache.into(),
            replay: false,
        }
    }

    /// Send a request rejected with `401` once more, with a new token, when its body can be
    /// cloned. Off by default: a replay sends the request twice, which is only right for
    /// requests that are safe to repeat.
    pub fn replay_once_on_401(mut self, replay: bool) -> Self {
        self.replay = replay;
        self
    }

    /// The header for the next request and the generation of its token.
    async fn header(&self) -> Result<(HeaderValue, u64), crate::Error> {
        if let Some(fresh) = self.cache.fresh_header() {
            return Ok(fresh);
        }
        let entry = self.cache.entry().await?;
        Ok((entry.header.clone(), entry.generation))
    }
}

#[async_trait::async_trait]
impl Middleware for BearerAuthMiddleware {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if request.headers().contains_key(AUTHORIZATION) {
            return next.run(request, extensions).await;
        }
        let (header, generation) = self
            .header()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let replay = if self.replay {
            request.try_clone()
        } else {
            None
        };
        request.headers_mut().insert(AUTHORIZATION, header);
        let response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        report_rejected(self.cache.slot(), generation);
        let Some(mut replay) = replay else {
            return Ok(response);
        };
        let (header, replacement) = self
            .header()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        if replacement == generation {
            // The cache kept the rejected token (invalidations are rate-limited): a replay
            // would send the same request with the same token again.
            return Ok(response);
        }
        replay.headers_mut().insert(AUTHORIZATION, header);
        // The first answer is not read: its connection goes back to the pool once dropped.
        drop(response);
        next.run(replay, extensions).await
    }
}

//! The hub's server HTTP API (`/api/*`, authenticated with an API key), for back ends,
//! scripts and `ferry pub`.

use ferry_proto::ErrorPayload;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{HubError, Published};
use crate::ws::{Error, ErrorKind};

/// A client of the hub's `/api/*` endpoints.
#[derive(Debug, Clone)]
pub struct HubApi {
    base: reqwest::Url,
    api_key: String,
    client: reqwest::Client,
}

impl HubApi {
    /// A client for the hub at `base` (e.g. `http://127.0.0.1:8080`) with `api_key`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for a URL that is not `http://` or `https://`;
    /// [`ErrorKind::Tls`] when the TLS settings cannot be built.
    pub fn new(base: &str, api_key: &str) -> Result<HubApi, HubError> {
        HubApi::with_tls(base, api_key, crate::ws::transport::default_tls()?)
    }

    /// [`HubApi::new`] trusting what `tls` trusts (a private CA, pins: see
    /// [`TlsTrust`](crate::http::TlsTrust)).
    ///
    /// # Errors
    ///
    /// As [`HubApi::new`].
    pub fn with_tls(
        base: &str,
        api_key: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<HubApi, HubError> {
        let mut url = reqwest::Url::parse(base).map_err(|e| {
            Error::new(ErrorKind::InvalidUrl, format!("`{base}` is not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::new(
                ErrorKind::InvalidUrl,
                format!("`{base}` is not an http:// or https:// URL"),
            )
            .into());
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Tls, format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(HubApi {
            base: url,
            api_key: api_key.to_string(),
            client,
        })
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T, HubError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::new(ErrorKind::InvalidUrl, format!("{path}: {e}")))?;
        let response = self
            .client
            .post(url.clone())
            .header("authorization", format!("apikey {}", self.api_key))
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                let kind = if e.is_timeout() {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Connection
                };
                // reqwest's own message names the URL again; say it once, then the causes
                // (skipping any that repeat the one before).
                let mut causes: Vec<String> = Vec::new();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    let text = s.to_string();
                    if !causes.last().is_some_and(|last| last.contains(&text)) {
                        causes.push(text);
                    }
                    source = s.source();
                }
                let detail = if causes.is_empty() {
                    e.to_string()
                } else {
                    causes.join(": ")
                };
                Error::new(kind, format!("{url}: {detail}"))
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Error::new(
                ErrorKind::Connection,
                format!("{url}: reading the answer: {e}"),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| HubError::Decode(format!("{url}: {e}")));
        }
        match serde_json::from_slice::<ErrorPayload>(&bytes) {
            Ok(p) => Err(HubError::from_payload(p)),
            Err(_) => Err(Error::http_status(
                status.as_u16(),
                format!(
                    "{url} answered HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            )
            .into()),
        }
    }

    /// Call any server API endpoint: `POST {base}/api/{name}` with `body`; the answer's
    /// JSON document.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn call(&self, name: &str, body: Value) -> Result<Value, HubError> {
        self.post(&format!("api/{name}"), body).await
    }

    /// Publish `data` to `channel` (`POST /api/publish`).
    ///
    /// # Errors
    ///
    /// The server's refusal (`AUTH_FAILED` for a wrong key, `UNKNOWN_CHANNEL`, ...) or a
    /// transport error (`CONNECTION_ERROR`, `TIMEOUT`, `HTTP_STATUS`).
    pub async fn publish<T: serde::Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<Published, HubError> {
        let data = serde_json::to_value(data)
            .map_err(|e| HubError::Decode(format!("encoding data: {e}")))?;
        self.post("api/publish", json!({ "channel": channel, "data": data }))
            .await
    }

    /// The hub's counters (`POST /api/stats`): `connections`, `channels`, `subscriptions`,
    /// `publications`, `deliveries`, `slow_consumers`, `uptime_secs`.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn stats(&self) -> Result<Value, HubError> {
        self.post("api/stats", json!({})).await
    }

    /// Channels with subscribers on this node (`POST /api/channels`):
    /// `{"channels": [{"channel", "subscribers"}]}`.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn channels(&self) -> Result<Value, HubError> {
        self.post("api/channels", json!({})).await
    }

    /// Close every connection of `user` (`POST /api/disconnect`): with `reconnect`, code
    /// 1013 invites clients back; without, 1008 tells them not to return. Returns how many
    /// connections were closed.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn disconnect_user(&self, user: &str, reconnect: bool) -> Result<u64, HubError> {
        let v: Value = self
            .post(
                "api/disconnect",
                json!({ "user": user, "reconnect": reconnect }),
            )
            .await?;
        Ok(v["disconnected"].as_u64().unwrap_or(0))
    }
}

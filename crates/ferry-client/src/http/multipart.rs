//! Multipart upload of one or many files streamed from disk, with progress (SPEC H10).
//!
//! Files are never read into memory: each part is a stream over the open file with its
//! length, so the request has a `Content-Length` and memory stays flat for any size.
//! Progress counts file bytes as the connection takes them.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use http::Method;
use reqwest::multipart::{Form, Part};
use tokio_util::sync::CancellationToken;

use super::Http;
use super::error::HttpError;
use super::progress::{Progress, ProgressFn, SharedProgress};
use super::request::open_file;
use super::response::Response;

/// A multipart/form-data upload being configured; [`send`](Self::send) runs it. Made by
/// [`Http::multipart`]. It is sent once: a one-shot body is never retried.
#[must_use = "an upload does nothing until sent"]
pub struct MultipartUpload {
    http: Http,
    url: String,
    method: Method,
    fields: Vec<Field>,
    headers: Vec<(String, String)>,
    on_progress: Option<ProgressFn>,
    cancel: Option<CancellationToken>,
    timeout: Option<Option<Duration>>,
}

impl std::fmt::Debug for MultipartUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartUpload")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("fields", &self.fields.len())
            .finish_non_exhaustive()
    }
}

enum Field {
    Text {
        name: String,
        value: String,
    },
    File {
        name: String,
        path: PathBuf,
        file_name: Option<String>,
        mime: Option<String>,
    },
}

impl MultipartUpload {
    pub(crate) fn new(http: Http, url: &str) -> MultipartUpload {
        MultipartUpload {
            http,
            url: url.to_string(),
            method: Method::POST,
            fields: Vec::new(),
            headers: Vec::new(),
            on_progress: None,
            cancel: None,
            timeout: None,
        }
    }

    /// The method. Default POST.
    pub fn method(mut self, method: Method) -> MultipartUpload {
        self.method = method;
        self
    }

    /// A text field.
    pub fn text(mut self, name: impl Into<String>, value: impl Into<String>) -> MultipartUpload {
        self.fields.push(Field::Text {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// A file field: the file's name as the part's file name, the content type guessed from
    /// its extension.
    pub fn file(self, name: impl Into<String>, path: impl Into<PathBuf>) -> MultipartUpload {
        self.file_with(name, path, None, None)
    }

    /// A file field with an explicit file name and/or content type.
    pub fn file_with(
        mut self,
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        file_name: Option<String>,
        mime: Option<String>,
    ) -> MultipartUpload {
        self.fields.push(Field::File {
            name: name.into(),
            path: path.into(),
            file_name,
            mime,
        });
        self
    }

    /// One file field named `name` per path.
    pub fn files<P: Into<PathBuf>>(
        mut self,
        name: &str,
        paths: impl IntoIterator<Item = P>,
    ) -> MultipartUpload {
        for p in paths {
            self = self.file(name, p);
        }
        self
    }

    /// Add a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> MultipartUpload {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Called as file bytes are sent; `total` is the sum of the file sizes.
    pub fn on_progress(
        mut self,
        callback: impl FnMut(&Progress) + Send + 'static,
    ) -> MultipartUpload {
        self.on_progress = Some(Box::new(callback));
        self
    }

    /// Cancel the upload when `token` is cancelled (`CANCELLED`).
    pub fn cancel_token(mut self, token: CancellationToken) -> MultipartUpload {
        self.cancel = Some(token);
        self
    }

    /// Total timeout for the upload instead of the client's; `None` for no limit (large
    /// files on a slow link).
    pub fn timeout(mut self, timeout: Option<Duration>) -> MultipartUpload {
        self.timeout = Some(timeout);
        self
    }

    /// Send the form and wait for the response. Errors: `IO_ERROR` for a file that cannot
    /// be opened, and those of [`RequestBuilder::send`](super::RequestBuilder::send).
    pub async fn send(self) -> Result<Response, HttpError> {
        let mut sizes = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            if let Field::File { path, .. } = field {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| HttpError::io(format!("cannot read {}", path.display()), e))?;
                if !meta.is_file() {
                    return Err(HttpError::invalid(format!(
                        "{} is not a file",
                        path.display()
                    )));
                }
                sizes.push(meta.len());
            }
        }
        let total: u64 = sizes.iter().sum();
        let progress = SharedProgress::new(Some(total), self.on_progress);
        let mut form = Form::new();
        for field in self.fields {
            form = match field {
                Field::Text { name, value } => form.text(name, value),
                Field::File {
                    name,
                    path,
                    file_name,
                    mime,
                } => {
                    let (file, len) = open_file(&path).await?;
                    let counter = progress.clone();
                    let stream = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
                        if let Ok(c) = &chunk {
                            counter.add(c.len() as u64);
                        }
                        chunk
                    });
                    let file_name = file_name.unwrap_or_else(|| {
                        path.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "file".to_string())
                    });
                    let mime = mime.unwrap_or_else(|| {
                        mime_guess::from_path(&path)
                            .first_or_octet_stream()
                            .to_string()
                    });
                    let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                        .file_name(file_name)
                        .mime_str(&mime)
                        .map_err(|_| {
                            HttpError::invalid(format!("invalid content type {mime:?}"))
                        })?;
                    form.part(name, part)
                }
            };
        }
        let mut req = self
            .http
            .request(self.method, &self.url)
            .multipart_form(form);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(token) = self.cancel {
            req = req.cancel_token(token);
        }
        req = match self.timeout {
            Some(Some(t)) => req.timeout(t),
            Some(None) => req.no_timeout(),
            None => req,
        };
        req.send().await
    }
}

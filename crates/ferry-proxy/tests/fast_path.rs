//! The HTTP/1.1 fast path, byte by byte: what backends receive, what clients get back, and
//! which requests it leaves to hyper. A real proxy on loopback, raw sockets on both sides
//! where the exact bytes matter, hyper as the backend where an independent HTTP/1.1
//! implementation should accept what the proxy sends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry_proxy::config::HealthCheckConfig;
use ferry_proxy::{BackendConfig, Proxy, ProxyConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Safety net for every wait; nothing here should come near it.
const WAIT: Duration = Duration::from_secs(10);

/// A hyper backend that answers every request with what it received, as JSON: method,
/// target, version, headers and body. Counts the connections it accepts.
async fn echo_backend() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let service = service_fn(|req: hyper::Request<Incoming>| async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                let headers: BTreeMap<String, String> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect();
                let seen = json!({
                    "method": parts.method.as_str(),
                    "target": parts.uri.to_string(),
                    "version": format!("{:?}", parts.version),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                    seen.to_string(),
                ))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (address, accepted)
}

/// A backend that reads one request head per connection and writes `answer` as it is.
async fn raw_backend(answer: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream.write_all(answer).await;
                // Closing ends an answer delimited by the close.
            });
        }
    });
    address
}

/// A proxy in front of `backend` on its own runtime thread; stopped when the test ends.
async fn proxy(backend: &str) -> SocketAddr {
    proxy_with(backend, |_| {}).await
}

/// [`proxy`], with `tweak` applied to its configuration.
async fn proxy_with(backend: &str, tweak: impl FnOnce(&mut ProxyConfig)) -> SocketAddr {
    let mut config = ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        backends: vec![BackendConfig {
            address: backend.to_string(),
            weight: 1,
        }],
        // Checks would open connections of their own and muddle the counts.
        health_check: HealthCheckConfig {
            enabled: false,
            ..HealthCheckConfig::default()
        },
        ..ProxyConfig::default()
    };
    tweak(&mut config);
    let proxy = Proxy::bind(config, 1).expect("bind the proxy");
    let address = proxy.local_addr().expect("addr");
    tokio::spawn(proxy.run(std::future::pending()));
    address
}

/// One response read off a raw connection: status, headers (lower-case names, in order),
/// the body decoded from its framing, and the raw bytes of the head.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Reads responses off a raw client connection, keeping what follows each one.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(proxy: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(proxy).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// More bytes into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("the proxy answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response; `head_only` for the answer to a HEAD request.
    async fn answer(&mut self, head_only: bool) -> Answer {
        let (status, headers, head_len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).expect("a valid head") {
                let headers = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (resp.code.expect("status"), headers, n);
            }
            assert!(self.fill().await, "closed before a whole head");
        };
        self.buf.drain(..head_len);
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 || status < 200 {
            return answer;
        }
        if answer.header("transfer-encoding") == Some("chunked") {
            answer.body = self.dechunk().await;
        } else if let Some(n) = answer.header("content-length") {
            let n: usize = n.parse().expect("a length");
            while self.buf.len() < n {
                assert!(self.fill().await, "closed inside a body");
            }
            answer.body = self.buf.drain(..n).collect();
        } else {
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.buf);
        }
        answer
    }

    /// A chunked body, decoded (trailers skipped).
    async fn dechunk(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .expect("a chunk size");
            if size == 0 {
                while !self.line().await.is_empty() {}
                return body;
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill().await, "closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            assert_eq!(self.buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
        }
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill().await, "closed inside a line");
        }
    }

    /// Whether the proxy closes the connection (reads to the end; nothing more may come).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

#[tokio::test]
async fn pipelined_requests_and_their_bodies_reach_the_backend_on_one_connection() {
    let (backend, accepted) = echo_backend().await;
    let proxy = proxy(&backend).await;
    let mut client = Client::connect(proxy).await;
    // Four requests in one write: a GET with a hop-by-hop header, a POST with a length, a
    // POST with a chunked body and a trailer, a HEAD.
    client
        .send(
            b"GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nConnection: x-private\r\n\
              X-Private: secret\r\nX-Forwarded-For: 10.0.0.1\r\nX-Kept: yes\r\n\r\n\
              POST /length HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\nhello\
              POST /chunked HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n\
              HEAD /head HTTP/1.1\r\nHost: example.test\r\n\r\n",
        )
        .await;

    let get = client.answer(false).await;
    assert_eq!(get.status, 200);
    let seen = get.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["target"], "/a?b=c");
    let headers = &seen["headers"];
    assert_eq!(headers["host"], "example.test");
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "example.test");
    assert_eq!(
        headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"example.test\""
    );
    assert!(headers.get("x-private").is_none(), "{headers}");
    assert!(headers.get("connection").is_none(), "{headers}");

    let post = client.answer(false).await.json();
    assert_eq!(
        (&post["method"], &post["body"]),
        (&json!("POST"), &json!("hello"))
    );
    let chunked = client.answer(false).await.json();
    assert_eq!(chunked["body"], "abcdefg", "{chunked}");
    assert_eq!(chunked["headers"]["transfer-encoding"], "chunked");

    let head = client.answer(true).await;
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some(), "{head:?}");

    // The same connection carries one more; every request went over one backend connection.
    client
        .send(b"GET /again HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    assert_eq!(client.answer(false).await.json()["target"], "/again");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // `Connection: close` is answered, then the connection ends.
    client
        .send(b"GET /last HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
        .await;
    let last = client.answer(false).await;
    assert_eq!(last.header("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn answers_of_every_framing_reach_the_client_unchanged() {
    // Chunked with a trailer; an interim 103 before the answer; no length (until the close).
    let chunked = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
    )
    .await;
    let interim = raw_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let until_close =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it").await;
    let no_content = raw_backend(b"HTTP/1.1 204 No Content\r\nX-Done: 1\r\n\r\n").await;

    let mut client = Client::connect(proxy(&chunked).await).await;
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let answer = client.answer(false).await;
    assert_eq!(answer.body, b"hello world");
    assert!(
        answer.header("keep-alive").is_none(),
        "hop-by-hop: {answer:?}"
    );

    let mut client = Client::connect(proxy(&interim).await).await;
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let early = client.answer(false).await;
    assert_eq!(early.status, 103);
    assert_eq!(early.header("link"), Some("</style.css>; rel=preload"));
    let created = client.answer(false).await;
    assert_eq!((created.status, created.body.as_slice()), (201, &b"ok"[..]));

    let mut client = Client::connect(proxy(&until_close).await).await;
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let answer = client.answer(false).await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.body, b"all of it");

    let mut client = Client::connect(proxy(&no_content).await).await;
    client
        .send(b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let first = client.answer(false).await;
    assert_eq!((first.status, first.header("x-done")), (204, Some("1")));
    // The 204 had no body: the next answer starts right after it.
    assert_eq!(client.answer(false).await.status, 204);
}

#[tokio::test]
async fn requests_the_fast_path_leaves_alone_are_served_by_hyper() {
    let (backend, _) = echo_backend().await;
    let proxy = proxy(&backend).await;

    // HTTP/1.0.
    let mut client = Client::connect(proxy).await;
    client.send(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let old = client.answer(false).await;
    assert_eq!(old.status, 200);
    assert_eq!(old.json()["target"], "/old");

    // `Expect: 100-continue`: the client waits for the go-ahead before its body.
    let mut client = Client::connect(proxy).await;
    client
        .send(
            b"PUT /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;
    assert_eq!(client.answer(false).await.status, 100);
    client.send(b"data").await;
    assert_eq!(client.answer(false).await.json()["body"], "data");

    // Both a length and a chunked coding (RFC 9112 §6.3): the coding decides, the length
    // is dropped, and the connection closes after the answer. Never forwarded ambiguously.
    let mut client = Client::connect(proxy).await;
    client
        .send(b"POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await;
    let answer = client.answer(false).await;
    let seen = answer.json();
    assert_eq!(seen["body"], "", "{seen}");
    assert!(seen["headers"].get("content-length").is_none(), "{seen}");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(client.closed().await);

    // A head larger than the fast path takes goes to hyper, whose limit is higher.
    let mut client = Client::connect(proxy).await;
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(70 * 1024)
    );
    client.send(big.as_bytes()).await;
    assert_eq!(client.answer(false).await.status, 200);

    // HTTP/2 with prior knowledge (h2c), from curl.
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-w", "\n%{http_version}"])
        .arg(format!("http://{proxy}/h2"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, version) = text.rsplit_once('\n').expect("body and version");
    assert_eq!(version, "2", "{text}");
    let seen: Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(seen["target"], "/h2");
}

#[tokio::test]
async fn a_malformed_chunked_body_closes_the_connection_and_harms_no_other_request() {
    let (backend, _) = echo_backend().await;
    let proxy = proxy(&backend).await;
    let mut client = Client::connect(proxy).await;
    client
        .send(b"POST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n")
        .await;
    assert!(client.closed().await, "no answer, the connection ends");
    // The next client is served normally (the half-sent request's backend connection was
    // not put back into the pool).
    let mut client = Client::connect(proxy).await;
    client.send(b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(client.answer(false).await.json()["target"], "/fine");
}

#[tokio::test]
async fn a_backend_that_closed_an_idle_connection_is_reconnected_for_the_next_request() {
    // This backend answers once per connection and closes it without saying so: the
    // proxy's pooled connection is dead by the next request.
    let backend = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let proxy = proxy(&backend).await;
    let mut client = Client::connect(proxy).await;
    for _ in 0..3 {
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let answer = client.answer(false).await;
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"ok"[..]));
    }
}

#[tokio::test]
async fn a_refused_upload_gets_its_answer_before_the_connection_closes() {
    // No backend listens here: the upload cannot be forwarded, and its body is never read.
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = gone.local_addr().expect("addr").to_string();
    drop(gone);
    let proxy = proxy(&address).await;
    let mut client = Client::connect(proxy).await;
    let body = vec![b'x'; 8 << 20];
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The whole upload goes out before the answer is read: the proxy reads the body it
    // refused and throws it away before closing. (A socket closed with unread bytes sends
    // a reset, which fails this sending or destroys the answer before it is read.)
    client.send(head.as_bytes()).await;
    client.send(&body).await;
    client.stream.shutdown().await.expect("shutdown");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, client.stream.read_to_end(&mut answer))
        .await
        .expect("in time")
        .expect("the answer, then the end");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 502 "), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.ends_with("backend failed\n"), "{text}");
}

#[tokio::test]
async fn the_response_timeout_starts_once_the_upload_is_sent() {
    let (backend, _) = echo_backend().await;
    // The backend has a whole second to answer once the body is in, which it always has
    // on loopback; the client's pause below is longer than that.
    let proxy = proxy_with(&backend, |c| c.limits.response_timeout_ms = 1000).await;
    // HTTP/1.1 takes the fast path, HTTP/1.0 goes to hyper: both must wait for a slow
    // upload to end before they start the backend's clock.
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut client = Client::connect(proxy).await;
        client
            .send(
                format!("POST /slow {version}\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
                    .as_bytes(),
            )
            .await;
        // The client pauses mid-body for longer than the response timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        client.send(b"56789").await;
        let answer = client.answer(false).await;
        assert_eq!(answer.status, 200, "{version}: {answer:?}");
        assert_eq!(answer.json()["body"], "0123456789", "{version}");
    }
}

#[tokio::test]
async fn an_upload_to_a_backend_that_stopped_reading_fails_with_a_504() {
    // This backend accepts connections and never reads from them.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let proxy = proxy_with(&backend, |c| c.limits.response_timeout_ms = 200).await;
    // Larger than what the sockets between the proxy and the backend can hold.
    let body = vec![b'x'; 32 << 20];
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut client = Client::connect(proxy).await;
        let head = format!(
            "PUT /stuck {version}\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (mut read, mut write) = client.stream.split();
        let sending = async {
            // The proxy stops taking the body once it has answered: this may fail.
            let _ = write.write_all(head.as_bytes()).await;
            let _ = write.write_all(&body).await;
            let _ = write.shutdown().await;
        };
        let mut answer = Vec::new();
        let reading = async {
            let _ = read.read_to_end(&mut answer).await;
        };
        // Before, the proxy went on writing to the backend for ever and the client hung.
        tokio::time::timeout(WAIT, async { tokio::join!(sending, reading) })
            .await
            .unwrap_or_else(|_| panic!("{version}: the exchange never ended"));
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 504") || text.starts_with("HTTP/1.0 504"),
            "{version}: {text}"
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_is_let_go() {
    let (backend, _) = echo_backend().await;
    let proxy = proxy_with(&backend, |c| c.limits.header_read_timeout_ms = 300).await;
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut client = Client::connect(proxy).await;
        // Half the body, then silence with the connection open.
        client
            .send(
                format!("POST /half {version}\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
                    .as_bytes(),
            )
            .await;
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, client.stream.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{version}: the proxy never let go"))
            .expect("read");
        let text = String::from_utf8_lossy(&answer);
        // The fast path closes without an answer; hyper's path answers 408.
        match version {
            "HTTP/1.1" => assert!(answer.is_empty(), "{text}"),
            _ => assert!(text.starts_with("HTTP/1.0 408"), "{text}"),
        }
    }
}

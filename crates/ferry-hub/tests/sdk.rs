//! `/sdk/ferry.js` over a real loopback socket: the committed browser bundle
//! (clients/js/dist/ferry.min.js), with its version, caching headers and revalidation.
#![allow(clippy::unwrap_used)]

mod support;

use support::TestServer;

fn committed_bundle() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../clients/js/dist/ferry.min.js"
    );
    std::fs::read_to_string(path).unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_bundle_is_served_with_its_version_and_revalidated_by_etag() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let r = http.get(server.http("/sdk/ferry.js")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        header(&r, "cache-control"),
        "public, max-age=300, must-revalidate"
    );
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    let version = header(&r, "x-ferry-sdk-version");
    let etag = header(&r, "etag");
    assert!(etag.starts_with(&format!("\"{version}-")), "{etag}");
    assert_eq!(r.text().await.unwrap(), committed_bundle());

    let r = http
        .get(server.http("/sdk/ferry.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    assert_eq!(header(&r, "etag"), etag);
    assert!(r.text().await.unwrap().is_empty());

    let r = http
        .get(server.http(&format!("/sdk/ferry@{version}.js")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        header(&r, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.text().await.unwrap(), committed_bundle());

    let r = http
        .get(server.http("/sdk/ferry@0.0.0-not-this.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains(&format!("ferry@{version}.js"))
    );
}

#[tokio::test]
async fn the_bundle_is_compressed_for_clients_that_accept_gzip() {
    let server = TestServer::start().await;
    // no_gzip: see the raw encoding even when reqwest's own decompression is compiled in
    // (the workspace build unifies its features), so the body stays compressed.
    let r = reqwest::Client::builder()
        .no_gzip()
        .build()
        .unwrap()
        .get(server.http("/sdk/ferry.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "content-encoding"), "gzip");
    let body = r.bytes().await.unwrap();
    assert!(
        body.len() < committed_bundle().len() / 2,
        "gzipped {} bytes",
        body.len()
    );
    println!("/sdk/ferry.js over the wire, gzip: {} bytes", body.len());
}

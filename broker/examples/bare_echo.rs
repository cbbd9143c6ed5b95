//! A bare actix-web echo of a POST body: the ceiling for the broker's HTTP work on this machine.
//!
//! `cargo run --release -p broker --example bare_echo -- 127.0.0.1:18090` then point a load generator
//! at `/echo` with the same body as the broker benchmark. Same actix-web version and features as the
//! broker, one worker per CPU.

use actix_web::{web, App, HttpResponse, HttpServer};

async fn echo(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(body)
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_string());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| App::new().route("/echo", web::post().to(echo)))
            .bind(&addr)?
            .run()
            .await
    })
}

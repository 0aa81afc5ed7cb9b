//! Logging in: Nacos' `POST /nacos/v1/auth/login` (HTTP port) hands out an access token that
//! every gRPC request then carries in its `accessToken` header, until it expires.
//!
//! One small HTTP/1.1 exchange, written here rather than pulling an HTTP client in for it.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::config::NacosConfig;
use super::error::NacosError;

/// An access token and when to renew it.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub value: String,
    /// Half-way through its life: renewed from then on.
    pub renew_at: Instant,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginAnswer {
    access_token: Option<String>,
    #[serde(default)]
    token_ttl: u64,
}

/// Logs in as the configured user; `None` when no user is configured.
pub(crate) async fn login(config: &NacosConfig) -> Result<Option<Token>, NacosError> {
    let Some((user, password)) = &config.user else {
        return Ok(None);
    };
    let server = config.http_addr();
    let body = format!(
        "username={}&password={}",
        form_encode(user),
        form_encode(password)
    );
    let exchange = post_form(&server, "/nacos/v1/auth/login", &body);
    let (status, text) = tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| NacosError::Unreachable {
            server: server.clone(),
            reason: format!(
                "the login got no answer within {:?}",
                config.request_timeout
            ),
        })?
        .map_err(|err| NacosError::Unreachable {
            server: server.clone(),
            reason: format!("login: {err}"),
        })?;
    let refused = |reason: String| NacosError::Unauthenticated {
        user: user.clone(),
        server: server.clone(),
        reason,
    };
    if status == 403 || status == 401 {
        return Err(refused(text.trim().to_string()));
    }
    if status != 200 {
        return Err(NacosError::Refused {
            server: server.clone(),
            what: format!("the login of user `{user}`"),
            code: status,
            message: text.trim().to_string(),
        });
    }
    let answer: LoginAnswer = serde_json::from_str(&text).map_err(|err| {
        refused(format!(
            "the login answer is not Nacos' JSON ({err}): {text}"
        ))
    })?;
    let value = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refused(format!("the login answer has no access token: {text}")))?;
    Ok(Some(Token {
        value,
        renew_at: Instant::now() + renew_after(answer.token_ttl),
    }))
}

/// When to renew a token the server says lives `ttl` seconds: half-way through, so that it is
/// never used past its life (a refusal renews it as well). A server that names no TTL gets Java
/// Nacos' default (18000 s).
fn renew_after(ttl: u64) -> Duration {
    let ttl = if ttl == 0 { DEFAULT_TTL } else { ttl };
    Duration::from_secs(ttl) / 2
}

/// Java Nacos' default token life (`nacos.core.auth.default.token.expire.seconds`).
const DEFAULT_TTL: u64 = 18_000;

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// One `POST` with a form body over a fresh connection; the status and the body.
async fn post_form(server: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

/// The status and body of an HTTP/1.1 response read to its end.
fn parse_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status in the HTTP answer"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_half_way_through_the_servers_ttl() {
        assert_eq!(renew_after(2), Duration::from_secs(1));
        assert_eq!(renew_after(3600), Duration::from_secs(1800));
        assert_eq!(renew_after(0), Duration::from_secs(9000));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn answers_are_parsed_plain_and_chunked() {
        let plain = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 13\r\n\r\nunknown user!";
        assert_eq!(
            parse_response(plain).unwrap(),
            (403, "unknown user!".into())
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (200, "hello world".into())
        );
    }
}

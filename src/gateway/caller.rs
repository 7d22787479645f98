//! Who is calling over HTTP: a bearer token in `Authorization` (a JWT, or a development
//! token in dev mode) or, for browsers, a JWT in the session cookie. Both go through
//! the same authenticator as gRPC. A state-changing request authenticated by cookie
//! must come from an allowed origin (a cross-site page could otherwise make the
//! browser send the cookie with a request it forged), and so must a GET that issues a
//! signature ([`Door::BrowserIssuing`]); the SDK credentials endpoint takes no cookie.

use http::{HeaderMap, Method, header};

use crate::caller::Caller;
use crate::identity;

use super::App;
use super::problem::Problem;

/// How the caller presented its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `Authorization` header: sent deliberately by code, never by a browser on its
    /// own, so no cross-site check is needed.
    Header,
    /// The session cookie: the browser attaches it to any request to the gateway.
    Cookie,
}

/// What a route takes as its caller's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// `Authorization: Bearer <token>`, or the session cookie; with the cookie, a
    /// change (a method but GET or HEAD) must come from an allowed origin.
    Browser,
    /// As [`Door::Browser`], and with the cookie a GET too must come from the page's
    /// own origin or an allowed one: the GET issues a signature, which a cross-site
    /// page could otherwise have the user's browser fetch (a link, an image), spending
    /// the user's budget and the audit log's lines.
    BrowserIssuing,
    /// The `Authorization` value alone, with or without `Bearer` (the AWS SDKs'
    /// container-credentials provider sends the token as the whole value); no cookie.
    Sdk,
}

/// The caller of a request, or why it has none.
pub(crate) fn identify(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    door: Door,
) -> Result<(Caller, Via), Problem> {
    // Counted as the gRPC door counts its refusals; the identity module logs which
    // check failed for a token it read.
    let (caller, via) =
        authenticate(app, headers, door).inspect_err(|_| crate::metrics::unauthenticated())?;
    tracing::Span::current().record("caller", caller.id());
    if via == Via::Cookie {
        if !matches!(*method, Method::GET | Method::HEAD) {
            check_origin(app, headers)?;
        } else if door == Door::BrowserIssuing {
            check_same_site(app, headers)?;
        }
    }
    Ok((caller, via))
}

/// The caller the request's token or cookie names.
fn authenticate(app: &App, headers: &HeaderMap, door: Door) -> Result<(Caller, Via), Problem> {
    let Some((token, via)) = presented(app, headers, door)? else {
        tracing::info!(reason = "no credentials", "caller refused");
        let how = match door {
            Door::Sdk => {
                "this endpoint reads the Authorization header only (an AWS SDK sends \
                 AWS_CONTAINER_AUTHORIZATION_TOKEN or the file of \
                 AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE there); cookies are not taken"
            }
            Door::Browser | Door::BrowserIssuing => {
                "send 'Authorization: Bearer <token>' or sign in for the session cookie"
            }
        };
        return Err(identity::Error::NoCredentials(how.into()).into());
    };
    match app.authenticator.authenticate_token(token) {
        Ok(caller) => Ok((caller, via)),
        // The browser sent no bearer token: the message names the cookie.
        Err(e) if via == Via::Cookie => {
            Err(Problem::session_refused(&app.settings.session_cookie, &e))
        }
        Err(e) => Err(e.into()),
    }
}

fn presented<'h>(
    app: &App,
    headers: &'h HeaderMap,
    door: Door,
) -> Result<Option<(&'h str, Via)>, Problem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = values.next() {
        if values.next().is_some() {
            return Err(identity::Error::Malformed.into());
        }
        let value = value
            .to_str()
            .map_err(|_| identity::Error::Malformed)?
            .trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            Some(_) => return Err(identity::Error::Malformed.into()),
            None if door == Door::Sdk => value,
            None => return Err(identity::Error::Malformed.into()),
        };
        if token.is_empty() {
            return Err(identity::Error::Malformed.into());
        }
        return Ok(Some((token, Via::Header)));
    }
    if door == Door::Sdk {
        return Ok(None);
    }
    Ok(cookie(headers, &app.settings.session_cookie)?.map(|token| (token, Via::Cookie)))
}

/// The value of cookie `name`, from every `Cookie` header (RFC 6265: `a=b; c=d`). Sent
/// twice (set for two paths or domains: a sibling domain can plant one, "cookie
/// tossing"), it is refused rather than the first taken, as two `Authorization`
/// headers are.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Problem> {
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"'));
    let first = values.next();
    if values.next().is_some() {
        return Err(identity::Error::NoCredentials(format!(
            "the cookie {name} was sent twice (set for two paths or domains); clear both and \
             sign in again"
        ))
        .into());
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// A cookie-authenticated change must name an allowed origin. A request without
/// `Origin` is refused too: every browser sends it on a cross-origin or non-GET
/// request, so its absence means a client that should use a bearer token.
fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), Problem> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    match origin {
        Some(origin) if app.settings.allowed_origins.iter().any(|o| o == origin) => Ok(()),
        Some(_) => Err(Problem::cross_site(
            "this origin may not use the session cookie here; add it to \
             http.allowed_origins, or send a bearer token",
        )),
        None => Err(Problem::cross_site(
            "a change authenticated by the session cookie needs an Origin header; \
             send a bearer token instead",
        )),
    }
}

/// A cookie-authenticated GET that issues a signature comes from the page's own
/// origin or an allowed one. Browsers say where a request comes from: `Origin` on a
/// cross-origin fetch, `Sec-Fetch-Site` on every request; a client that sends
/// neither is not a browser acting for a page.
fn check_same_site(app: &App, headers: &HeaderMap) -> Result<(), Problem> {
    if headers.contains_key(header::ORIGIN) {
        return check_origin(app, headers);
    }
    match headers
        .get("sec-fetch-site")
        .map(http::HeaderValue::as_bytes)
    {
        None | Some(b"same-origin" | b"none") => Ok(()),
        Some(_) => Err(Problem::cross_site(
            "this route signs with the session cookie only for the page's own origin or \
             http.allowed_origins; from elsewhere, send a bearer token",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn cookie_is_found_among_others_and_across_headers() {
        let h = headers(&[("cookie", "a=1; sg=tok"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, "sg").unwrap(), Some("tok"));
        assert_eq!(cookie(&h, "b").unwrap(), Some("2"));
        assert_eq!(cookie(&h, "s").unwrap(), None);
        assert_eq!(cookie(&headers(&[("cookie", "sg=")]), "sg").unwrap(), None);
    }

    #[test]
    fn a_cookie_sent_twice_is_refused_not_taken_first() {
        for h in [
            headers(&[("cookie", "sg=planted; sg=tok")]),
            headers(&[("cookie", "sg=planted"), ("cookie", "a=1; sg=tok")]),
        ] {
            let refused = cookie(&h, "sg").unwrap_err();
            assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
        }
    }
}

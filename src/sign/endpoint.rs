//! Where presigned requests point: the S3 endpoint (scheme and `host[:port]`) and
//! how a bucket is addressed on it (path-style or virtual-hosted).
//!
//! The endpoint comes from configuration and is parsed once at start-up; anything
//! that could smuggle extra meaning into a signed URL (user info, a query, a
//! fragment, a path) is refused there, with an error that does not echo the URL
//! (it might hold a password). The per-request addressing decision mirrors
//! aws-sdk-s3's endpoint rules, so our URLs point where the SDK's would.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Error;
use crate::scope::BucketName;

/// An S3 endpoint and its addressing style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    https: bool,
    /// `host[:port]`, lowercase, without a default port (`:80` for http, `:443` for
    /// https): exactly what the HTTP client sends as `Host`, which SigV4 signs.
    authority: String,
    /// Virtual-hosted addressing cannot work on an IP address (there is no
    /// `bucket.127.0.0.1`), so such endpoints are always path-style, as in the SDK.
    host_is_ip: bool,
    force_path_style: bool,
}

impl Endpoint {
    /// Parses the endpoint of an S3 service.
    ///
    /// `url: None` means AWS itself: `https://s3.{region}.amazonaws.com`
    /// (`amazonaws.com.cn` for `cn-` regions), virtual-hosted unless
    /// `force_path_style`. `Some("http://127.0.0.1:9000")` means that server, e.g. an
    /// S3-compatible store, path-style if `force_path_style`.
    ///
    /// # Errors
    /// - [`Error::InvalidRegion`]: `region` is not a DNS label such as `us-east-1`;
    /// - [`Error::UnsupportedScheme`]: the URL does not start with `http://` or
    ///   `https://`;
    /// - [`Error::UserInfo`]: the URL has `user[:password]@`;
    /// - [`Error::QueryOrFragment`]: the URL has `?…` or `#…`;
    /// - [`Error::PathNotAllowed`]: the URL has a path other than `/`;
    /// - [`Error::InvalidHost`], [`Error::InvalidPort`]: the authority is malformed.
    pub fn new(url: Option<&str>, region: &str, force_path_style: bool) -> Result<Endpoint, Error> {
        check_region(region)?;
        match url {
            None => Endpoint::aws(region, force_path_style),
            Some(url) => Endpoint::custom(url, force_path_style),
        }
    }

    /// AWS S3 itself in `region`: `https://s3.{region}.amazonaws.com`
    /// (`amazonaws.com.cn` for `cn-` regions).
    ///
    /// # Errors
    /// [`Error::InvalidRegion`]: `region` is not a DNS label such as `us-east-1`.
    pub fn aws(region: &str, force_path_style: bool) -> Result<Endpoint, Error> {
        check_region(region)?;
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        Ok(Endpoint {
            https: true,
            authority: format!("s3.{region}.{suffix}"),
            host_is_ip: false,
            force_path_style,
        })
    }

    /// The S3-compatible store at `url`, e.g. `http://127.0.0.1:9000`.
    ///
    /// # Errors
    /// As [`Endpoint::new`], but for the region.
    pub fn custom(url: &str, force_path_style: bool) -> Result<Endpoint, Error> {
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else {
            return Err(Error::UnsupportedScheme);
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(Error::UserInfo);
        }
        if tail.contains(['?', '#']) {
            return Err(Error::QueryOrFragment);
        }
        if !(tail.is_empty() || tail == "/") {
            return Err(Error::PathNotAllowed);
        }

        let (host, port, host_is_ip) = split_authority(authority)?;
        let default_port = if https { 443 } else { 80 };
        let authority = match port {
            Some(port) if port != default_port => format!("{host}:{port}"),
            _ => host,
        };
        Ok(Endpoint {
            https,
            authority,
            host_is_ip,
            force_path_style,
        })
    }

    /// The endpoint as a URL without a trailing slash, e.g. `http://127.0.0.1:9000`:
    /// what an S3 SDK's `endpoint_url` should be set to.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority)
    }

    /// Whether buckets are addressed path-style (`/{bucket}/{key}`) by configuration.
    pub fn force_path_style(&self) -> bool {
        self.force_path_style
    }

    /// `http` or `https`.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// `host[:port]` as sent in `Host`.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether `bucket` is addressed virtual-hosted (`{bucket}.{authority}/{key}`)
    /// rather than path-style, by the same rules as aws-sdk-s3:
    /// - never when path-style is forced or the host is an IP address;
    /// - over https, only for buckets without dots: a dotted bucket would not match
    ///   a wildcard TLS certificate such as `*.s3.amazonaws.com`;
    /// - over http, dots are fine if every dot-separated part is at least 3
    ///   characters (the SDK's "virtual-hostable segment" rule).
    pub(crate) fn virtual_hosted(&self, bucket: &BucketName) -> bool {
        if self.force_path_style || self.host_is_ip {
            return false;
        }
        let name = bucket.as_str();
        if self.https {
            !name.contains('.')
        } else {
            // `BucketName` already rules out the SDK's other conditions: bad
            // characters, edge `-`, `.-`/`-.`, an IPv4-looking name.
            name.split('.').all(|part| part.len() >= 3)
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Checks a region name. A region goes into the default host name and the credential
/// scope, so it must be a DNS label: 1 to 63 of `a-z 0-9 -`, not starting with `-` (the
/// SDK refuses others too, as "not a valid DNS name").
///
/// # Errors
/// [`Error::InvalidRegion`] with what is wrong.
pub fn check_region(region: &str) -> Result<(), Error> {
    let invalid = |reason| Err(Error::InvalidRegion { reason });
    if region.is_empty() || region.len() > 63 {
        return invalid("must be 1 to 63 characters long");
    }
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("may hold only lowercase letters, digits and '-'");
    }
    if region.starts_with('-') {
        return invalid("must not start with '-'");
    }
    Ok(())
}

/// Splits `host[:port]` (host possibly a bracketed IPv6 address), normalising the host
/// to lowercase. Returns the host as written in a URL, the port, and whether the
/// host is an IP address.
fn split_authority(authority: &str) -> Result<(String, Option<u16>, bool), Error> {
    let invalid = |reason| Err(Error::InvalidHost { reason });
    let (host, port, is_ip) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return invalid("has an unclosed '['");
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return invalid("is not a valid IPv6 address inside '[…]'");
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(Error::InvalidPort)?),
        };
        (&authority[..ip.len() + 2], port, true)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return invalid("is missing");
        }
        if host.len() > 253 {
            return invalid("is longer than 253 characters");
        }
        // `_` is not valid in DNS host names but is common in container networks
        // (compose service names); it needs no encoding, so it is let through.
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return invalid(
                "may hold only ASCII letters, digits, '-', '_' and '.' (write international names in punycode)",
            );
        }
        if host
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
        {
            return invalid("has an empty or over-long label");
        }
        (host, port, host.parse::<Ipv4Addr>().is_ok())
    };
    let port = match port {
        None => None,
        Some(digits) => {
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(Error::InvalidPort);
            }
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return Err(Error::InvalidPort),
                Ok(port) => Some(port),
            }
        }
    };
    Ok((host.to_ascii_lowercase(), port, is_ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str, path_style: bool) -> Result<Endpoint, Error> {
        Endpoint::new(Some(url), "us-east-1", path_style)
    }

    fn bucket(name: &str) -> BucketName {
        name.parse().unwrap()
    }

    #[test]
    fn aws_default_is_regional_https() {
        let e = Endpoint::new(None, "eu-west-1", false).unwrap();
        assert_eq!(e.url(), "https://s3.eu-west-1.amazonaws.com");
        assert!(!e.force_path_style());
        assert!(e.virtual_hosted(&bucket("reports")));
        let cn = Endpoint::new(None, "cn-north-1", false).unwrap();
        assert_eq!(cn.url(), "https://s3.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn custom_endpoint_keeps_scheme_host_and_port() {
        let e = endpoint("http://127.0.0.1:9000", true).unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:9000");
        assert!(e.force_path_style());
        assert_eq!(
            endpoint("http://127.0.0.1:9000/", true).unwrap().url(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            endpoint("HTTPS://MinIO.Example.COM", false).unwrap().url(),
            "https://minio.example.com"
        );
        assert_eq!(
            endpoint("http://[::1]:9000", true).unwrap().url(),
            "http://[::1]:9000"
        );
    }

    #[test]
    fn default_port_is_dropped_as_the_host_header_drops_it() {
        assert_eq!(
            endpoint("http://minio:80", true).unwrap().url(),
            "http://minio"
        );
        assert_eq!(
            endpoint("https://minio:443", true).unwrap().url(),
            "https://minio"
        );
        assert_eq!(
            endpoint("https://minio:80", true).unwrap().url(),
            "https://minio:80"
        );
    }

    #[test]
    fn user_info_is_rejected() {
        assert_eq!(
            endpoint("http://user:pw@minio:9000", true),
            Err(Error::UserInfo)
        );
        assert_eq!(endpoint("http://user@minio", true), Err(Error::UserInfo));
    }

    #[test]
    fn query_fragment_and_path_are_rejected() {
        assert_eq!(
            endpoint("http://minio?x=1", true),
            Err(Error::QueryOrFragment)
        );
        assert_eq!(
            endpoint("http://minio/#frag", true),
            Err(Error::QueryOrFragment)
        );
        assert_eq!(
            endpoint("http://minio/s3", true),
            Err(Error::PathNotAllowed)
        );
        assert_eq!(endpoint("http://minio//", true), Err(Error::PathNotAllowed));
    }

    #[test]
    fn other_schemes_are_rejected() {
        for url in ["ftp://minio", "minio:9000", "//minio", "s3://bucket", ""] {
            assert_eq!(endpoint(url, true), Err(Error::UnsupportedScheme), "{url}");
        }
    }

    #[test]
    fn malformed_hosts_and_ports_are_rejected() {
        for url in [
            "http://",
            "http://:9000",
            "http://a..b",
            "http://mi nio",
            "http://[::1",
            "http://[zz]",
            "http://münchen.de",
        ] {
            assert!(
                matches!(endpoint(url, true), Err(Error::InvalidHost { .. })),
                "{url}"
            );
        }
        for url in [
            "http://minio:",
            "http://minio:0",
            "http://minio:65536",
            "http://minio:+80",
            "http://minio:9000:1",
            "http://[::1]9000",
        ] {
            assert_eq!(endpoint(url, true), Err(Error::InvalidPort), "{url}");
        }
    }

    #[test]
    fn bad_regions_are_rejected() {
        for region in [
            "",
            "US-EAST-1",
            "us east",
            "-us",
            "us/east",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    Endpoint::new(None, region, false),
                    Err(Error::InvalidRegion { .. })
                ),
                "{region}"
            );
        }
    }

    #[test]
    fn errors_never_echo_the_url() {
        let err = endpoint("http://admin:hunter2@minio:9000", true).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(!err.to_string().contains("minio"));
    }

    #[test]
    fn addressing_follows_the_sdk_rules() {
        let https = endpoint("https://s3.example.com", false).unwrap();
        assert!(https.virtual_hosted(&bucket("plain-bucket")));
        assert!(
            !https.virtual_hosted(&bucket("dotted.bucket")),
            "TLS wildcard would not match"
        );
        let http = endpoint("http://localhost:9000", false).unwrap();
        assert!(http.virtual_hosted(&bucket("dotted.bucket")));
        assert!(!http.virtual_hosted(&bucket("a.b.bucket")), "short part");
        let ip = endpoint("http://127.0.0.1:9000", false).unwrap();
        assert!(!ip.virtual_hosted(&bucket("plain-bucket")));
        let v6 = endpoint("http://[::1]:9000", false).unwrap();
        assert!(!v6.virtual_hosted(&bucket("plain-bucket")));
        let forced = endpoint("https://s3.example.com", true).unwrap();
        assert!(!forced.virtual_hosted(&bucket("plain-bucket")));
    }
}

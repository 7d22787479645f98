//! Certificates for the tests, generated in the test: a CA, client certificates with
//! the URI SANs a case needs, a server certificate for localhost. No key is checked in.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS client configuration trusting only this CA, without a client certificate.
    pub fn client_config(&self) -> rustls::ClientConfig {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

/// A leaf certificate and key, PEM.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert: String,
    /// Its private key, PEM.
    pub key: String,
}

impl Leaf {
    /// Writes the key, then the certificate (a renewal's order), as `tls.key` and
    /// `tls.crt` in `dir`; their paths, certificate first.
    pub fn write_to(&self, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&key_file, &self.key).unwrap();
        std::fs::write(&cert_file, &self.cert).unwrap();
        (cert_file, key_file)
    }
}

/// Whether a certificate is valid now.
pub enum Validity {
    Now,
    Expired,
}

/// A client certificate with `uris` as URI SANs.
pub fn client_cert(ca: &Ca, uris: &[&str], validity: Validity) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "client");
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let Validity::Expired = validity {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    Leaf {
        cert: params.signed_by(&key, &ca.issuer).unwrap().pem(),
        key: key.serialize_pem(),
    }
}

/// A server certificate for localhost and 127.0.0.1.
pub fn server_cert(ca: &Ca) -> Leaf {
    server_cert_valid(ca, Validity::Now)
}

/// A server certificate for localhost and 127.0.0.1, valid now or expired.
pub fn server_cert_valid(ca: &Ca, validity: Validity) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if let Validity::Expired = validity {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    Leaf {
        cert: params.signed_by(&key, &ca.issuer).unwrap().pem(),
        key: key.serialize_pem(),
    }
}

//! What a presigned GET, PUT and POST cost: our signer against the bare SigV4
//! arithmetic it cannot avoid, and against aws-sdk-s3's `presigned()`, in one run.
//!
//! - `bare_sigv4`: one SHA-256 of a prebuilt canonical request, one HMAC-SHA256 of
//!   the string to sign with a precomputed signing key, hex of both: the floor;
//! - `storage_grants_presign_get`: `Signer::presign_get` with a warm key cache;
//! - `aws_sdk_presigned`: aws-sdk-s3 GetObject `.presigned(cfg)`, same inputs, on a
//!   current-thread tokio runtime (`block_on` per call, as a sync caller would).
//!
//! The same three run again with a session token (temporary credentials, as under
//! IRSA), whose ~1 KB the canonical request and the URL must carry.
//!
//! GrantWrite's two forms are measured against the same `bare_sigv4` floor:
//! - `storage_grants_presign_put_all_pins`: `Signer::presign_put` pinning content
//!   type, length, SHA-256 checksum, two metadata entries and create-only (seven
//!   signed headers, the list of headers to send), and
//!   `aws_sdk_presigned_put_all_pins`, PutObject `.presigned(cfg)` with the same
//!   pins (its signature checked equal to ours);
//! - `storage_grants_presign_post`: `Signer::presign_post` with a size range, a
//!   content type and two metadata entries: policy JSON, base64, one HMAC, the
//!   form fields. The SDK cannot presign a POST.
//!
//! A counting global allocator gives allocations per operation. After criterion
//! has run, the means are read back from criterion's `estimates.json` and printed
//! as a table that can be pasted into a note, with the two targets checked:
//! ours ≤ 2× bare, and the SDK ≥ 30× ours.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::presigning::PresigningConfig;
use criterion::Criterion;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use storage_grants::credentials::SigningCredentials;
use storage_grants::expiry::Ttl;
use storage_grants::scope::{
    BucketName, ChecksumSha256, HeaderText, Metadata, ObjectKey, SizeRange,
};
use storage_grants::secret::Secret;
use storage_grants::sign::{Endpoint, GetObject, PostObject, PutObject, Signer, UploadPart};
use storage_grants::upload::{PartNumber, UploadId};

// === counting allocator ===

#[path = "common/mod.rs"]
mod common;
use common::allocations_per_op;

// === inputs ===

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "eu-west-1";
const BUCKET: &str = "reports-2026";
const KEY: &str = "tenants/acme/reports/2026/q3 summary.pdf";
const DISPOSITION: &str = "attachment; filename=\"q3 summary.pdf\"";
const TTL_SECS: u64 = 900;
const GROUP: &str = "presign_get";
const UPLOAD_KEY: &str = "tenants/acme/uploads/2026/q3 ledger.csv";
const UPLOAD_CONTENT_TYPE: &str = "text/csv; charset=utf-8";
const UPLOAD_LENGTH: u64 = 48_213;
/// A SHA-256 digest in base64 (which bytes it digests does not matter to signing).
const UPLOAD_CHECKSUM: &str = "qUiQTy8PR5uPgZdpSzAYSw0u0cHNKh7A+4XSmaGSpEc=";
const UPLOAD_METADATA: [(&str, &str); 2] = [("case-id", "INC-4711"), ("owner", "team-ledger")];

/// An STS-shaped session token: base64 of about the size IRSA's tokens have.
fn session_token() -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut token: String = (0..1036u32)
        .map(|i| char::from(alphabet[((i * 7919 + 13) % 64) as usize]))
        .collect();
    token.push_str("==");
    token
}

fn signing_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
}

fn credentials(token: Option<&str>) -> SigningCredentials {
    SigningCredentials {
        access_key_id: AKID.to_owned(),
        secret_access_key: Secret::new(SECRET.to_owned()),
        session_token: token.map(|t| Secret::new(t.to_owned())),
        expires_at: None,
    }
}

fn sdk_client(token: Option<&str>) -> aws_sdk_s3::Client {
    let creds = aws_credential_types::Credentials::new(
        AKID,
        SECRET,
        token.map(str::to_owned),
        None,
        "bench",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(creds)
        // As in tests/presign_oracle.rs: no checksum-mode parameters in the URL.
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn signature_of(url: &str) -> &str {
    url.split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Signature="))
        .expect("a presigned URL has a signature")
}

/// The SigV4 signing key for `SECRET` on `date` in `REGION`, derived plainly.
fn signing_key(date: &str) -> [u8; 32] {
    let hmac = |key: &[u8], data: &str| -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().into()
    };
    let k = hmac(format!("AWS4{SECRET}").as_bytes(), date);
    let k = hmac(&k, REGION);
    let k = hmac(&k, "s3");
    hmac(&k, "aws4_request")
}

/// The floor: what any SigV4 presigner must compute, given the canonical request
/// and the signing key. Hex goes to stack buffers, so it allocates nothing.
struct Bare {
    canonical_request: String,
    string_to_sign_prefix: String,
    key: [u8; 32],
}

impl Bare {
    /// Rebuilds the canonical request from a URL our signer produced, so both sign
    /// exactly the same thing (checked against the signature below).
    fn from_url(url: &str) -> Bare {
        let (base, query) = url.split_once('?').expect("query");
        let query = query
            .split("&X-Amz-Signature=")
            .next()
            .expect("query before signature");
        let after_scheme = base.split_once("://").expect("scheme").1;
        let (host, path) = after_scheme.split_at(after_scheme.find('/').expect("path"));
        let date_time = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Date="))
            .expect("date");
        let date = &date_time[..8];
        let key = signing_key(date);
        Bare {
            canonical_request: format!(
                "GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
            ),
            string_to_sign_prefix: format!(
                "AWS4-HMAC-SHA256\n{date_time}\n{date}/{REGION}/s3/aws4_request\n"
            ),
            key,
        }
    }

    fn sign(&self) -> [u8; 64] {
        let mut creq_hex = [0u8; 64];
        hex::encode_to_slice(
            Sha256::digest(self.canonical_request.as_bytes()),
            &mut creq_hex,
        )
        .expect("64 bytes of hex");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("32-byte key");
        mac.update(self.string_to_sign_prefix.as_bytes());
        mac.update(&creq_hex);
        let mut signature = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut signature).expect("64 bytes of hex");
        signature
    }
}

// === the run ===

/// One input set, its contenders measured. `bare` is the floor the row is compared
/// with; `own_bare` says whether this row measured it (GrantWrite's rows reuse the
/// GET row's floor, so every ratio has the same denominator).
struct Row {
    label: &'static str,
    bare: &'static str,
    own_bare: bool,
    ours: &'static str,
    sdk: Option<&'static str>,
    /// Whether the GET targets (ours <= 2x bare, SDK >= 30x ours) apply.
    get_targets: bool,
    allocs_bare: f64,
    allocs_ours: f64,
    allocs_sdk: f64,
}

impl Row {
    fn new(
        label: &'static str,
        bare: &'static str,
        own_bare: bool,
        ours: &'static str,
        sdk: Option<&'static str>,
        get_targets: bool,
    ) -> Row {
        Row {
            label,
            bare,
            own_bare,
            ours,
            sdk,
            get_targets,
            allocs_bare: 0.0,
            allocs_ours: 0.0,
            allocs_sdk: 0.0,
        }
    }
}

fn bench_inputs(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    token: Option<&str>,
    row: &mut Row,
) {
    let bucket: BucketName = BUCKET.parse().expect("valid bucket");
    let key: ObjectKey = KEY.parse().expect("valid key");
    let disposition: HeaderText = DISPOSITION.parse().expect("valid text");
    let object = GetObject {
        bucket: &bucket,
        key: &key,
        version_id: None,
        response_content_type: None,
        response_content_disposition: Some(&disposition),
    };
    let creds = credentials(token);
    let time = signing_time();
    let ttl = Ttl::clamp(&[Duration::from_secs(TTL_SECS)], time, None).expect("valid ttl");
    let signer = Signer::new(
        Endpoint::new(None, REGION, false).expect("valid endpoint"),
        REGION,
    );
    let client = sdk_client(token);
    let presign_config = PresigningConfig::builder()
        .start_time(time)
        .expires_in(Duration::from_secs(TTL_SECS))
        .build()
        .expect("valid presigning config");
    let sdk_presign = || {
        rt.block_on(
            client
                .get_object()
                .bucket(BUCKET)
                .key(KEY)
                .response_content_disposition(DISPOSITION)
                .presigned(presign_config.clone()),
        )
        .expect("the SDK presigns")
    };

    // All three must compute the same signature, or the comparison means nothing.
    let ours_url = signer
        .presign_get(&creds, &object, time, ttl)
        .url
        .expose()
        .clone();
    let bare = Bare::from_url(&ours_url);
    let sdk_request = sdk_presign();
    assert_eq!(
        signature_of(&ours_url).as_bytes(),
        &bare.sign()[..],
        "bare differs from ours"
    );
    assert_eq!(
        signature_of(&ours_url),
        signature_of(sdk_request.uri()),
        "the SDK differs from ours"
    );

    row.allocs_bare = allocations_per_op(10_000, || {
        black_box(bare.sign());
    });
    row.allocs_ours = allocations_per_op(10_000, || {
        black_box(signer.presign_get(black_box(&creds), black_box(&object), time, ttl));
    });
    row.allocs_sdk = allocations_per_op(200, || {
        black_box(sdk_presign());
    });

    let mut group = c.benchmark_group(GROUP);
    group.bench_function(row.bare, |b| b.iter(|| black_box(black_box(&bare).sign())));
    group.bench_function(row.ours, |b| {
        b.iter(|| signer.presign_get(black_box(&creds), black_box(&object), black_box(time), ttl))
    });
    if let Some(sdk) = row.sdk {
        group.bench_function(sdk, |b| b.iter(sdk_presign));
    }
    group.finish();
}

/// GrantWrite's PUT with every pin, ours against the SDK's.
fn bench_put(c: &mut Criterion, rt: &tokio::runtime::Runtime, row: &mut Row) {
    let bucket: BucketName = BUCKET.parse().expect("valid bucket");
    let key: ObjectKey = UPLOAD_KEY.parse().expect("valid key");
    let content_type: HeaderText = UPLOAD_CONTENT_TYPE.parse().expect("valid text");
    let checksum: ChecksumSha256 = UPLOAD_CHECKSUM.parse().expect("valid checksum");
    let metadata = Metadata::new(UPLOAD_METADATA).expect("valid metadata");
    let object = PutObject {
        bucket: &bucket,
        key: &key,
        content_type: Some(&content_type),
        content_length: Some(UPLOAD_LENGTH),
        checksum_sha256: Some(&checksum),
        metadata: &metadata,
        create_only: true,
    };
    let creds = credentials(None);
    let time = signing_time();
    let ttl = Ttl::clamp(&[Duration::from_secs(TTL_SECS)], time, None).expect("valid ttl");
    let signer = Signer::new(
        Endpoint::new(None, REGION, false).expect("valid endpoint"),
        REGION,
    );
    let client = sdk_client(None);
    let presign_config = PresigningConfig::builder()
        .start_time(time)
        .expires_in(Duration::from_secs(TTL_SECS))
        .build()
        .expect("valid presigning config");
    let sdk_presign = || {
        let mut request = client
            .put_object()
            .bucket(BUCKET)
            .key(UPLOAD_KEY)
            .content_type(UPLOAD_CONTENT_TYPE)
            .content_length(i64::try_from(UPLOAD_LENGTH).expect("small"))
            .checksum_sha256(UPLOAD_CHECKSUM)
            .if_none_match("*");
        for (name, value) in UPLOAD_METADATA {
            request = request.metadata(name, value);
        }
        rt.block_on(request.presigned(presign_config.clone()))
            .expect("the SDK presigns")
    };

    let ours = signer.presign_put(&creds, &object, time, ttl);
    assert_eq!(ours.headers.len(), 6, "every pin is a header to send");
    assert_eq!(
        signature_of(ours.url.expose()),
        signature_of(sdk_presign().uri()),
        "the SDK differs from ours"
    );

    row.allocs_ours = allocations_per_op(10_000, || {
        black_box(signer.presign_put(black_box(&creds), black_box(&object), time, ttl));
    });
    row.allocs_sdk = allocations_per_op(200, || {
        black_box(sdk_presign());
    });

    let mut group = c.benchmark_group(GROUP);
    group.bench_function(row.ours, |b| {
        b.iter(|| signer.presign_put(black_box(&creds), black_box(&object), black_box(time), ttl))
    });
    if let Some(sdk) = row.sdk {
        group.bench_function(sdk, |b| b.iter(sdk_presign));
    }
    group.finish();
}

/// GrantWrite's POST form: range, content type, two metadata entries.
fn bench_post(c: &mut Criterion, row: &mut Row) {
    let bucket: BucketName = BUCKET.parse().expect("valid bucket");
    let key: ObjectKey = UPLOAD_KEY.parse().expect("valid key");
    let content_type: HeaderText = UPLOAD_CONTENT_TYPE.parse().expect("valid text");
    let metadata = Metadata::new(UPLOAD_METADATA).expect("valid metadata");
    let object = PostObject {
        bucket: &bucket,
        key: &key,
        content_type: Some(&content_type),
        size: SizeRange::new(1, 10 * 1024 * 1024).expect("valid range"),
        checksum_sha256: None,
        metadata: &metadata,
    };
    let creds = credentials(None);
    let time = signing_time();
    let ttl = Ttl::clamp(&[Duration::from_secs(TTL_SECS)], time, None).expect("valid ttl");
    let signer = Signer::new(
        Endpoint::new(None, REGION, false).expect("valid endpoint"),
        REGION,
    );

    // The form's signature is HMAC(signing key, policy field), or it means nothing.
    let form = signer.presign_post(&creds, &object, time, ttl);
    let field = |name: &str| {
        form.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .expect("the field is there")
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&signing_key(&field("x-amz-date")[..8]))
        .expect("32-byte key");
    mac.update(field("policy").as_bytes());
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        field("x-amz-signature"),
        "the POST signature does not verify"
    );

    row.allocs_ours = allocations_per_op(10_000, || {
        black_box(signer.presign_post(black_box(&creds), black_box(&object), time, ttl));
    });

    let mut group = c.benchmark_group(GROUP);
    group.bench_function(row.ours, |b| {
        b.iter(|| signer.presign_post(black_box(&creds), black_box(&object), black_box(time), ttl))
    });
    group.finish();
}

/// Where criterion writes, found the way criterion finds it: `$CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else the target directory this executable
/// lives in (`<target>/<profile>/deps/signing-<hash>`), else `./target/criterion`.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.file_name().is_some_and(|name| name == "deps"))
                .and_then(Path::parent) // <target>/<profile>
                .and_then(Path::parent) // <target>
                .map(|target| target.join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The mean (ns) criterion estimated for `bench` in this run, if it ran: an
/// `estimates.json` older than the run belongs to an earlier one and is ignored.
fn mean_ns(home: &Path, bench: &str, run_started: SystemTime) -> Option<f64> {
    let path = home
        .join(GROUP)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < run_started {
        return None;
    }
    let json = std::fs::read_to_string(&path).ok()?;
    // {"mean":{"confidence_interval":{…},"point_estimate":123.4,…},"median":…}
    let mean = &json[json.find("\"mean\"")?..];
    let value = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

fn print_summary(rows: &[Row], run_started: SystemTime) {
    let home = criterion_home();
    let fmt_ns = |ns: Option<f64>| ns.map_or_else(|| "n/a".to_owned(), |ns| format!("{ns:.0}"));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let fmt_x = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}x"));

    println!();
    println!("## presign GET / PUT / POST: storage-grants signer vs bare SigV4 vs aws-sdk-s3");
    println!();
    println!(
        "criterion mean, warm key cache; cpu: {}; {} cores",
        cpu_model().unwrap_or_else(|| "unknown".to_owned()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| inputs | operation | ns/op | allocs/op | vs bare |");
    println!("|---|---|---:|---:|---:|");
    let mut verdicts = Vec::new();
    for row in rows {
        let bare = mean_ns(&home, row.bare, run_started);
        let ours = mean_ns(&home, row.ours, run_started);
        let sdk = row.sdk.and_then(|name| mean_ns(&home, name, run_started));
        let mut lines = Vec::new();
        if row.own_bare {
            lines.push((row.bare, bare, row.allocs_bare));
        }
        lines.push((row.ours, ours, row.allocs_ours));
        if let Some(name) = row.sdk {
            lines.push((name, sdk, row.allocs_sdk));
        }
        for (name, ns, allocs) in lines {
            println!(
                "| {} | {name} | {} | {allocs:.1} | {} |",
                row.label,
                fmt_ns(ns),
                fmt_x(ratio(ns, bare))
            );
        }
        let ours_vs_bare = ratio(ours, bare);
        let speedup = ratio(sdk, ours);
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "not measured",
        };
        if row.get_targets {
            verdicts.push(format!(
                "- {}: ours/bare = {} (target <= 2x: {}); SDK/ours = {} (target >= 30x: {})",
                row.label,
                fmt_x(ours_vs_bare),
                verdict(ours_vs_bare.map(|r| r <= 2.0)),
                fmt_x(speedup),
                verdict(speedup.map(|s| s >= 30.0)),
            ));
        } else {
            let sdk_part = if row.sdk.is_some() {
                format!("; SDK/ours = {}", fmt_x(speedup))
            } else {
                "; no SDK equivalent".to_owned()
            };
            verdicts.push(format!(
                "- {}: ours/bare = {} (bare = the GET floor `{}`){sdk_part}",
                row.label,
                fmt_x(ours_vs_bare),
                row.bare,
            ));
        }
    }
    println!();
    for line in verdicts {
        println!("{line}");
    }
    println!();
    println!("(estimates read from {})", home.join(GROUP).display());
}

/// GrantUploadParts' signing for 100 parts (each with a length pin), to compare the
/// cost per part with one GrantWrite PUT.
fn bench_upload_parts(c: &mut Criterion) {
    let bucket: BucketName = BUCKET.parse().expect("valid bucket");
    let key: ObjectKey = UPLOAD_KEY.parse().expect("valid key");
    let upload_id: UploadId = "VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
        .parse()
        .expect("valid upload id");
    let creds = credentials(None);
    let time = signing_time();
    let ttl = Ttl::clamp(&[Duration::from_secs(TTL_SECS)], time, None).expect("valid ttl");
    let signer = Signer::new(
        Endpoint::new(None, REGION, false).expect("valid endpoint"),
        REGION,
    );
    let parts: Vec<PartNumber> = (1..=100u64)
        .map(|n| PartNumber::try_from(n).expect("1..=100"))
        .collect();
    let mut group = c.benchmark_group(GROUP);
    group.bench_function(UPLOAD_PARTS_100, |b| {
        b.iter(|| {
            for &part_number in &parts {
                black_box(signer.presign_upload_part(
                    black_box(&creds),
                    &UploadPart {
                        bucket: &bucket,
                        key: &key,
                        upload_id: &upload_id,
                        part_number,
                        content_length: Some(UPLOAD_LENGTH),
                        checksum_sha256: None,
                    },
                    time,
                    ttl,
                ));
            }
        })
    });
    group.finish();
}

/// Criterion's name for the 100-part bench.
const UPLOAD_PARTS_100: &str = "storage_grants_presign_100_upload_parts";

fn print_upload_parts(run_started: SystemTime) {
    let home = criterion_home();
    let parts = mean_ns(&home, UPLOAD_PARTS_100, run_started);
    let put = mean_ns(&home, "storage_grants_presign_put_all_pins", run_started);
    if let (Some(parts), Some(put)) = (parts, put) {
        println!(
            "- GrantUploadParts, 100 parts: {:.0} ns per part = {:.2}x one GrantWrite PUT \
             with all pins ({put:.0} ns)",
            parts / 100.0,
            parts / 100.0 / put
        );
    }
}

fn main() {
    let run_started = SystemTime::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let mut criterion = common::criterion();

    let token = session_token();
    let mut rows = [
        Row::new(
            "GET, long-lived keys",
            "bare_sigv4",
            true,
            "storage_grants_presign_get",
            Some("aws_sdk_presigned"),
            true,
        ),
        Row::new(
            "GET, 1 KB session token",
            "bare_sigv4_session_token",
            true,
            "storage_grants_presign_get_session_token",
            Some("aws_sdk_presigned_session_token"),
            true,
        ),
        Row::new(
            "PUT, all pins",
            "bare_sigv4",
            false,
            "storage_grants_presign_put_all_pins",
            Some("aws_sdk_presigned_put_all_pins"),
            false,
        ),
        Row::new(
            "POST, range + type + 2 meta",
            "bare_sigv4",
            false,
            "storage_grants_presign_post",
            None,
            false,
        ),
    ];
    bench_inputs(&mut criterion, &rt, None, &mut rows[0]);
    bench_inputs(&mut criterion, &rt, Some(&token), &mut rows[1]);
    bench_put(&mut criterion, &rt, &mut rows[2]);
    bench_post(&mut criterion, &mut rows[3]);
    bench_upload_parts(&mut criterion);
    criterion.final_summary();
    print_summary(&rows, run_started);
    print_upload_parts(run_started);
}

//! Reading a file the operator names (rules, TLS, JWKS, token files), most of them
//! again and again while the service runs: only a regular file, and only so much.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most a rules, certificate or key file may hold.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// The most a token file (a bearer token, a key) may hold.
pub const MAX_TOKEN_FILE: u64 = 64 << 10;

/// Reads `path` whole, when it is a regular file of at most `max` bytes.
///
/// It is opened without waiting and looked at before it is read: reading a FIFO in its
/// place would wait for a writer for ever, and a thread so blocked holds every later
/// reload and the process's exit; a device such as `/dev/zero` never ends.
///
/// # Errors
/// The file's own; `InvalidInput` saying what it is when it is not a regular file,
/// or that it is larger than `max`.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // What the path names, before opening it (a socket cannot be opened, and would be
    // told as "no such device"); looked at again once open, in case it was swapped.
    not_regular(&std::fs::metadata(path)?)?;
    // A FIFO opened for reading without O_NONBLOCK waits for a writer in `open`.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    not_regular(&meta)?;
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is larger than the {max} bytes such a file may have"),
        )
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// `InvalidInput` saying what `meta` describes when that is not a regular file.
fn not_regular(meta: &std::fs::Metadata) -> io::Result<()> {
    let file_type = meta.file_type();
    let what = if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() || file_type.is_block_device() {
        Some("a device")
    } else {
        None
    };
    match what {
        Some(what) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        )),
        None => Ok(()),
    }
}

/// As [`read_regular`], as UTF-8 text.
///
/// # Errors
/// As [`read_regular`]; `InvalidData` when the file is not UTF-8.
pub fn read_regular_text(path: &Path, max: u64) -> io::Result<String> {
    utf8(read_regular(path, max)?)
}

/// [`read_regular`] on the runtime's blocking threads.
///
/// # Errors
/// As [`read_regular`].
pub async fn read(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let path: PathBuf = path.to_owned();
    tokio::task::spawn_blocking(move || read_regular(&path, max))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// [`read_regular_text`] on the runtime's blocking threads.
///
/// # Errors
/// As [`read_regular_text`].
pub async fn read_text(path: &Path, max: u64) -> io::Result<String> {
    utf8(read(path, max).await?)
}

fn utf8(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_within_its_bound_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, "[[rules]]\n").unwrap();
        assert_eq!(read_regular_text(&file, 100).unwrap(), "[[rules]]\n");
        let err = read_regular(&file, 4).unwrap_err();
        assert!(err.to_string().contains("larger than the 4 bytes"), "{err}");

        // A FIFO nobody writes: refused at once, where a read would wait for ever.
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = read_regular(&fifo, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("a FIFO, not a regular file"),
            "{err}"
        );
        // A link to it, as a ConfigMap's `..data` link would be swapped.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(read_regular(&link, 100).is_err());

        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let err = read_regular(&socket, 100).unwrap_err();
        assert!(
            err.to_string().contains("a socket, not a regular file"),
            "{err}"
        );
        let err = read_regular(dir.path(), 100).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = read_regular(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(err.to_string().contains("a device"), "{err}");
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        let err = read_regular_text(&file, 100).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}

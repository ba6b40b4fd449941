//! Where an external command's stdout and stderr go: inherited, discarded, or a log file
//! rotated by size (keep N), as supervisord's `stdout_logfile_maxbytes` / `_backups` do.
//!
//! A file output is a pipe: the child writes into it, and a task on procvisor's runtime
//! copies what arrives into the file, rotating it before a write would pass the limit. The
//! task ends when every writer of the pipe has closed it (the child and anything it left
//! behind), so nothing the child wrote is lost to a restart.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;

/// Where one of a command's output streams goes.
///
/// ```
/// use procvisor::tree::{LogFile, Output};
/// let out = Output::File(LogFile::new("/tmp/worker.log").max_bytes(1 << 20).keep(3));
/// assert!(matches!(out, Output::File(_)));
/// assert!(matches!(Output::default(), Output::Inherit));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Output {
    /// The supervising process's own stream. The default.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A file, rotated by size.
    File(LogFile),
}

/// A log file rotated by size: when a write would take it past `max_bytes`, `path` becomes
/// `path.1`, `path.1` becomes `path.2`, and so on up to `path.<keep>`; the oldest goes.
///
/// Defaults: 10 MiB, keep 5 (supervisord's `50MB` / `10` are sized for a few programs per
/// host; a library may run many).
///
/// ```
/// let log = procvisor::tree::LogFile::new("/var/tmp/app.log").max_bytes(4096).keep(2);
/// assert_eq!(log.path(), std::path::Path::new("/var/tmp/app.log"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl LogFile {
    /// A log at `path`, with the default size and count.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogFile {
            path: path.into(),
            max_bytes: 10 << 20,
            keep: 5,
        }
    }

    /// Rotate before the file would pass `max_bytes` (at least 1).
    ///
    /// ```
    /// let log = procvisor::tree::LogFile::new("a.log").max_bytes(0);
    /// # let _ = log;
    /// ```
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Keep this many rotated files (0: the file is truncated instead).
    ///
    /// ```
    /// let log = procvisor::tree::LogFile::new("a.log").keep(0);
    /// # let _ = log;
    /// ```
    pub fn keep(mut self, keep: u32) -> Self {
        self.keep = keep;
        self
    }

    /// The file's path.
    ///
    /// ```
    /// assert_eq!(procvisor::tree::LogFile::new("x.log").path().to_str(), Some("x.log"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `n`th rotated file (`path.n`).
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
}

/// A log file open for appending, that rotates itself.
#[derive(Debug)]
pub(crate) struct RotatingWriter {
    spec: LogFile,
    file: File,
    len: u64,
}

impl RotatingWriter {
    /// Opens (or creates) the log, appending to what is there.
    pub(crate) fn open(spec: LogFile) -> io::Result<Self> {
        let file = Self::open_file(&spec.path)?;
        let len = file.metadata()?.len();
        Ok(RotatingWriter { spec, file, len })
    }

    fn open_file(path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Writes `data` in whole lines: the lines that fit go into the current file, and the
    /// file rotates before the first that would take it past the limit. A single line
    /// longer than the limit goes whole into a fresh file of its own.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.spec.max_bytes.saturating_sub(self.len) as usize;
            let take = if data.len() <= room {
                data.len()
            } else if let Some(k) = data[..room].iter().rposition(|&b| b == b'\n') {
                k + 1
            } else if self.len > 0 {
                self.rotate()?;
                continue;
            } else {
                // An empty file and a line longer than the limit: the line, whole.
                data.iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |k| k + 1)
            };
            self.file.write_all(&data[..take])?;
            self.len += take as u64;
            data = &data[take..];
            if !data.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.spec.keep == 0 {
            self.file.set_len(0)?;
            self.len = 0;
            return Ok(());
        }
        // Oldest first, so that no rename overwrites a file still to be moved.
        for n in (1..self.spec.keep).rev() {
            match fs::rename(self.spec.rotated(n), self.spec.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.spec.path, self.spec.rotated(1))?;
        self.file = Self::open_file(&self.spec.path)?;
        self.len = 0;
        Ok(())
    }
}

/// The two streams of one command, ready for `std::process::Command`, and the pumps to run
/// once it has started.
#[derive(Debug)]
pub(crate) struct Streams {
    stdout: Stdio,
    stderr: Stdio,
    pumps: Pumps,
}

/// The read ends of a command's log pipes, each with its file.
#[derive(Debug)]
pub(crate) struct Pumps(Vec<(OwnedFd, RotatingWriter)>);

impl Streams {
    /// Opens the files and pipes. Equal files for both streams share one pipe and one
    /// writer, so the lines interleave as the child wrote them.
    pub(crate) fn open(stdout: &Output, stderr: &Output) -> io::Result<Streams> {
        let mut pumps = Vec::new();
        let mut shared: Option<(LogFile, OwnedFd)> = None;
        let mut stdio = |out: &Output| -> io::Result<Stdio> {
            Ok(match out {
                Output::Inherit => Stdio::inherit(),
                Output::Null => Stdio::null(),
                Output::File(log) => {
                    if let Some((_, w)) = shared.as_ref().filter(|(l, _)| l == log) {
                        return Ok(Stdio::from(w.try_clone()?));
                    }
                    let writer = RotatingWriter::open(log.clone())?;
                    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                    pumps.push((r, writer));
                    shared = Some((log.clone(), w.try_clone()?));
                    Stdio::from(w)
                }
            })
        };
        let stdout = stdio(stdout)?;
        let stderr = stdio(stderr)?;
        Ok(Streams {
            stdout,
            stderr,
            pumps: Pumps(pumps),
        })
    }

    /// The child's stdout and stderr, and the pumps to start once it runs.
    pub(crate) fn split(self) -> (Stdio, Stdio, Pumps) {
        (self.stdout, self.stderr, self.pumps)
    }
}

impl Pumps {
    /// Starts copying each pipe into its file, on the current tokio runtime. Returns the
    /// pumps' errors through `report` (a full disk, a removed directory).
    pub(crate) fn pump(self, report: impl Fn(io::Error) + Clone + 'static) {
        for (read, writer) in self.0 {
            let report = report.clone();
            actix_rt::spawn(async move {
                if let Err(e) = copy(read, writer).await {
                    report(e);
                }
            });
        }
    }
}

/// Copies the pipe into the log until every writer has closed it.
async fn copy(read: OwnedFd, mut writer: RotatingWriter) -> io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        writer.write(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("procvisor-logs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let d = dir("keep");
        let log = LogFile::new(d.join("out.log")).max_bytes(10).keep(2);
        let mut w = RotatingWriter::open(log.clone()).unwrap();
        for chunk in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            w.write(chunk.as_bytes()).unwrap();
        }
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(log.path().to_owned()), "dddddd\n");
        assert_eq!(read(log.rotated(1)), "cccccc\n");
        assert_eq!(read(log.rotated(2)), "bbbbbb\n");
        assert!(!log.rotated(3).exists(), "only two rotated files are kept");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn keep_zero_truncates_and_appends_to_an_existing_file() {
        let d = dir("trunc");
        let log = LogFile::new(d.join("out.log")).max_bytes(8).keep(0);
        fs::write(log.path(), "old\n").unwrap();
        let mut w = RotatingWriter::open(log.clone()).unwrap();
        w.write(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(log.path()).unwrap(), "old\nnew\n");
        w.write(b"more\n").unwrap();
        assert_eq!(fs::read_to_string(log.path()).unwrap(), "more\n");
        assert!(!log.rotated(1).exists());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_chunk_is_split_at_lines_and_a_long_line_goes_whole_into_a_fresh_file() {
        let d = dir("big");
        let log = LogFile::new(d.join("out.log")).max_bytes(8).keep(3);
        let mut w = RotatingWriter::open(log.clone()).unwrap();
        w.write(b"ab\ncd\n0123456789\nef\n").unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(log.rotated(2)), "ab\ncd\n");
        assert_eq!(read(log.rotated(1)), "0123456789\n");
        assert_eq!(read(log.path().to_owned()), "ef\n");
        fs::remove_dir_all(d).unwrap();
    }
}

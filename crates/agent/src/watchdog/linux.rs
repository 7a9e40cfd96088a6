//! The Linux watchdog device interface (`linux/watchdog.h`): open the device (which starts
//! its timer), `WDIOC_GETSUPPORT`, `WDIOC_SETTIMEOUT`/`WDIOC_GETTIMEOUT`, `WDIOC_KEEPALIVE`,
//! and the magic close (write `V`, then close) that stops it.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

use super::Device;

// ioctl request numbers: _IOR/_IOWR('W', nr, int) and _IOR('W', 0, struct watchdog_info).
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
mod ioc {
    pub const READ: u64 = 2;
    pub const WRITE: u64 = 4;
    pub const SIZE_BITS: u64 = 13;
}
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod ioc {
    pub const READ: u64 = 2;
    pub const WRITE: u64 = 1;
    pub const SIZE_BITS: u64 = 14;
}

const fn request(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << (16 + ioc::SIZE_BITS)) | (size << 16) | ((b'W' as u64) << 8) | nr
}

const INT: u64 = std::mem::size_of::<libc::c_int>() as u64;
const WDIOC_GETSUPPORT: u64 = request(ioc::READ, 0, std::mem::size_of::<WatchdogInfo>() as u64);
const WDIOC_KEEPALIVE: u64 = request(ioc::READ, 5, INT);
const WDIOC_SETTIMEOUT: u64 = request(ioc::READ | ioc::WRITE, 6, INT);
const WDIOC_GETTIMEOUT: u64 = request(ioc::READ, 7, INT);
const WDIOF_SETTIMEOUT: u32 = 0x0080;
const WDIOF_MAGICCLOSE: u32 = 0x0100;

#[repr(C)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

/// A Linux watchdog device such as `/dev/watchdog` (softdog, or a hardware timer).
pub struct LinuxDevice {
    path: PathBuf,
    file: Option<File>,
    identity: String,
}

impl LinuxDevice {
    pub fn new(path: &Path) -> Self {
        LinuxDevice {
            path: path.to_path_buf(),
            file: None,
            identity: String::new(),
        }
    }

    fn ioctl_int(&self, request: u64, value: &mut libc::c_int) -> std::io::Result<()> {
        let fd = self.file.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        // SAFETY: `value` outlives the call and has the size the request encodes.
        let rc = unsafe { libc::ioctl(fd, request as _, value as *mut libc::c_int) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn support(&self) -> std::io::Result<WatchdogInfo> {
        let fd = self.file.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let mut info = WatchdogInfo {
            options: 0,
            firmware_version: 0,
            identity: [0; 32],
        };
        // SAFETY: `info` is a `struct watchdog_info` as the request encodes.
        let rc = unsafe { libc::ioctl(fd, WDIOC_GETSUPPORT as _, &mut info as *mut WatchdogInfo) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(info)
    }

    /// Stop the timer and close: the magic character first (drivers with `nowayout` keep
    /// running anyway, which `arm` refuses up front).
    fn magic_close(&mut self) -> std::io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.write_all(b"V")?;
        }
        Ok(())
    }

    fn try_arm(&mut self, timeout_s: u32) -> Result<u32, String> {
        let info = self
            .support()
            .map_err(|e| format!("WDIOC_GETSUPPORT refused: {e}"))?;
        let name_end = info.identity.iter().position(|b| *b == 0).unwrap_or(32);
        self.identity = String::from_utf8_lossy(&info.identity[..name_end]).into_owned();
        if info.options & WDIOF_MAGICCLOSE == 0 {
            return Err(format!(
                "{} cannot be stopped once started (no magic close): not used",
                self.describe()
            ));
        }
        if info.options & WDIOF_SETTIMEOUT != 0 {
            let mut value = timeout_s as libc::c_int;
            self.ioctl_int(WDIOC_SETTIMEOUT, &mut value).map_err(|e| {
                format!(
                    "the device does not accept a timeout of {timeout_s} s (WDIOC_SETTIMEOUT: {e})"
                )
            })?;
        }
        let mut actual: libc::c_int = 0;
        self.ioctl_int(WDIOC_GETTIMEOUT, &mut actual)
            .map_err(|e| format!("WDIOC_GETTIMEOUT refused: {e}"))?;
        u32::try_from(actual).map_err(|_| format!("the device reports a timeout of {actual} s"))
    }
}

impl Device for LinuxDevice {
    fn describe(&self) -> String {
        if self.identity.is_empty() {
            format!("watchdog device {}", self.path.display())
        } else {
            format!("{} at {}", self.identity, self.path.display())
        }
    }

    fn probe(&self, writer: Option<(u32, u32)>) -> Result<(), String> {
        let meta =
            std::fs::metadata(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        match writer {
            // The user postgres runs as (the agent is root): the device is Patroni's to use
            // only when that user may write it.
            Some((uid, gid)) => {
                let mode = meta.mode();
                let writable = (meta.uid() == uid && mode & 0o200 != 0)
                    || (meta.gid() == gid && mode & 0o020 != 0)
                    || mode & 0o002 != 0;
                if !writable {
                    return Err(format!(
                        "{} is not writable by uid {uid}",
                        self.path.display()
                    ));
                }
            }
            None => nix::unistd::access(&self.path, nix::unistd::AccessFlags::W_OK)
                .map_err(|e| format!("{}: {e}", self.path.display()))?,
        }
        Ok(())
    }

    fn arm(&mut self, timeout_s: u32) -> Result<u32, String> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        // From here the timer runs: every failure below closes it with the magic character.
        self.file = Some(file);
        match self.try_arm(timeout_s) {
            Ok(actual) => Ok(actual),
            Err(e) => {
                let _ = self.magic_close();
                Err(e)
            }
        }
    }

    fn keepalive(&mut self) -> Result<(), String> {
        let mut dummy: libc::c_int = 0;
        match self.ioctl_int(WDIOC_KEEPALIVE, &mut dummy) {
            Ok(()) => Ok(()),
            // Some drivers only take writes.
            Err(_) => match self.file.as_mut() {
                Some(f) => f
                    .write_all(b"1")
                    .map_err(|e| format!("keepalive to {}: {e}", self.path.display())),
                None => Err("the device is not open".into()),
            },
        }
    }

    fn disarm(&mut self) -> Result<(), String> {
        self.magic_close()
            .map_err(|e| format!("magic close of {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_linux_watchdog_h() {
        // Values from <linux/watchdog.h> on x86_64 and aarch64.
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            assert_eq!(WDIOC_GETSUPPORT, 0x8028_5700);
            assert_eq!(WDIOC_KEEPALIVE, 0x8004_5705);
            assert_eq!(WDIOC_SETTIMEOUT, 0xC004_5706);
            assert_eq!(WDIOC_GETTIMEOUT, 0x8004_5707);
        }
    }

    #[test]
    fn a_plain_file_is_not_a_watchdog() {
        // A regular file opens, but the first ioctl fails: refused, and said so.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("watchdog");
        std::fs::write(&path, "").expect("file");
        let mut dev = LinuxDevice::new(&path);
        assert!(dev.probe(None).is_ok());
        let err = dev.arm(5).expect_err("not a watchdog");
        assert!(err.contains("WDIOC_GETSUPPORT"), "{err}");
        // The magic character was written on the way out.
        assert_eq!(std::fs::read(&path).expect("read"), b"V");
        let missing = LinuxDevice::new(&dir.path().join("none"));
        let err = missing.probe(None).expect_err("missing");
        assert!(err.contains("No such file"), "{err}");
    }
}

//! Process limits: the open-file limit servers and load generators need raised.

use std::io;

fn get() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct, which `lim` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

fn set(lim: &libc::rlimit) -> io::Result<()> {
    // SAFETY: setrlimit reads one valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `rlim_t` as u64: it is unsigned on Linux and macOS but `i64` on FreeBSD, where
/// `RLIM_INFINITY` is negative-free but huge; a negative value reads as 0.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn to_u64(v: libc::rlim_t) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A u64 as `rlim_t`, saturating.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn from_u64(v: u64) -> libc::rlim_t {
    libc::rlim_t::try_from(v).unwrap_or(libc::rlim_t::MAX)
}

/// The soft RLIMIT_NOFILE (the most descriptors this process may open now).
pub fn nofile() -> io::Result<u64> {
    get().map(|l| to_u64(l.rlim_cur))
}

/// The soft RLIMIT_NPROC (the most processes and threads this user may have), `None`
/// when unlimited.
pub fn nproc() -> io::Result<Option<u64>> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct, which `lim` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur != libc::RLIM_INFINITY).then(|| to_u64(lim.rlim_cur)))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_to_hard() -> io::Result<u64> {
    let mut lim = get()?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        set(&lim)?;
    }
    Ok(to_u64(lim.rlim_cur))
}

/// Raises the soft RLIMIT_NOFILE to at least `need` (up to the hard limit), or explains
/// why it cannot.
pub fn raise_nofile(need: u64) -> io::Result<()> {
    let mut lim = get()?;
    if to_u64(lim.rlim_cur) >= need {
        return Ok(());
    }
    if to_u64(lim.rlim_max) < need {
        return Err(io::Error::other(format!(
            "{need} file descriptors are needed but the hard limit is {} (raise it with `ulimit -Hn` as root)",
            lim.rlim_max
        )));
    }
    lim.rlim_cur = from_u64(need);
    set(&lim)
}

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

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_to_hard() -> io::Result<libc::rlim_t> {
    let mut lim = get()?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        set(&lim)?;
    }
    Ok(lim.rlim_cur)
}

/// Raises the soft RLIMIT_NOFILE to at least `need` (up to the hard limit), or explains
/// why it cannot.
pub fn raise_nofile(need: u64) -> io::Result<()> {
    let mut lim = get()?;
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        return Err(io::Error::other(format!(
            "{need} file descriptors are needed but the hard limit is {} (raise it with `ulimit -Hn` as root)",
            lim.rlim_max
        )));
    }
    lim.rlim_cur = need.max(lim.rlim_cur);
    set(&lim)
}

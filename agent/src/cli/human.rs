//! Sizes as people read them, the one way every command prints them: four
//! significant digits in binary units, as Docker prints sizes (`19.53MiB`).

/// `19.53MiB`; `0B`, `1023B`, `1.5KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    let digits = match v {
        v if v >= 1000.0 => 0,
        v if v >= 100.0 => 1,
        v if v >= 10.0 => 2,
        _ => 3,
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(64 << 20), "64MiB");
        assert_eq!(bytes(20_480_000), "19.53MiB");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(u64::MAX), "16384PiB");
    }
}

//! The platform an image index is resolved for: `os/arch[/variant]` in OCI's names. By default
//! the host's (linux + `std::env::consts::ARCH` mapped to Go's GOARCH names, which OCI uses);
//! `dfget --platform os/arch[/variant]` overrides it, as `apptainer pull --platform` does.
//!
//! Invariant: every part of a `Platform` is non-empty lowercase `[a-z0-9._-]`, so it can go into
//! a message or a comparison as is.

use std::fmt;

use super::reference::{OrasError, OrasErrorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    /// Matched only when given: `linux/arm64` takes any arm64 variant.
    pub variant: Option<String>,
}

impl Platform {
    /// The machine this runs on.
    pub fn host() -> Platform {
        Platform { os: "linux".into(), arch: goarch(std::env::consts::ARCH).into(), variant: None }
    }

    pub fn is_linux_amd64(&self) -> bool {
        self.os == "linux" && self.arch == "amd64" && self.variant.is_none()
    }

    /// `os/arch` or `os/arch/variant`.
    pub fn parse(text: &str) -> Result<Platform, OrasError> {
        let bad = |why: &str| {
            OrasError::new(
                OrasErrorKind::BadReference,
                format!("invalid platform {text:?}: {why} (use os/arch[/variant], e.g. linux/arm64)"),
            )
        };
        let parts: Vec<&str> = text.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(bad("expected 2 or 3 parts"));
        }
        if !parts.iter().all(ok) {
            return Err(bad("parts are letters, digits, '.', '_' or '-'"));
        }
        let lower = |s: &str| s.to_ascii_lowercase();
        Ok(Platform { os: lower(parts[0]), arch: lower(parts[1]), variant: parts.get(2).map(|v| lower(v)) })
    }

    /// Whether an index child with this `os`/`arch`/`variant` serves this platform.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        os.eq_ignore_ascii_case(&self.os)
            && arch.eq_ignore_ascii_case(&self.arch)
            && self.variant.as_deref().is_none_or(|want| variant.is_some_and(|v| v.eq_ignore_ascii_case(want)))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Rust's `target_arch` → Go's GOARCH, the names OCI platforms use.
fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let p = |os: &str, arch: &str, v: Option<&str>| {
            Ok(Platform { os: os.into(), arch: arch.into(), variant: v.map(str::to_string) })
        };
        let cases: Vec<(&str, Result<Platform, &str>)> = vec![
            ("linux/arm64", p("linux", "arm64", None)),
            ("Linux/AMD64", p("linux", "amd64", None)),
            ("linux/arm/v7", p("linux", "arm", Some("v7"))),
            ("linux", Err("2 or 3 parts")),
            ("linux/arm/v7/x", Err("2 or 3 parts")),
            ("linux/", Err("parts are")),
            ("linux/am d64", Err("parts are")),
            ("", Err("2 or 3 parts")),
        ];
        for (input, want) in cases {
            match (Platform::parse(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(e), Err(needle)) => assert!(e.message.contains(needle), "{input}: {}", e.message),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn matching_and_host() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches("linux", "arm64", None) && arm64.matches("linux", "arm64", Some("v8")));
        assert!(!arm64.matches("linux", "amd64", None) && !arm64.matches("windows", "arm64", None));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.matches("linux", "arm", Some("v7")) && !v7.matches("linux", "arm", Some("v6")));
        assert!(!v7.matches("linux", "arm", None));
        assert_eq!(v7.to_string(), "linux/arm/v7");
        assert_eq!(goarch("x86_64"), "amd64");
        assert_eq!(goarch("aarch64"), "arm64");
        assert_eq!(goarch("riscv64"), "riscv64");
        assert_eq!(Platform::host().os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert!(Platform::host().is_linux_amd64());
    }
}

//! Private certificate authorities for the services' outbound HTTPS: a PEM file named by a
//! `*_CA_FILE` setting (the CA of a TLS-inspecting proxy, or of an internal endpoint), trusted
//! besides the operating system's store and the built-in public roots.

use std::path::Path;

/// A CA file that cannot be used; the message names the file and the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}={path}: {message}")]
pub struct CaFileError {
    /// The setting that named the file.
    pub setting: String,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Reads every certificate of the PEM file `path` (named by `setting`, for messages).
pub fn load_ca_file(setting: &str, path: &Path) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    let fail = |message: String| CaFileError {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
    if certificates.is_empty() {
        return Err(fail(
            "holds no certificate; give the CA's PEM file (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = load_ca_file("OOMNITZA_CA_FILE", &path).expect_err("refused");
        assert!(err.to_string().starts_with("OOMNITZA_CA_FILE="), "{err}");
        let missing =
            load_ca_file("OOMNITZA_CA_FILE", &dir.path().join("none.pem")).expect_err("refused");
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}

//! Manifests: CSV files of `bucket,key[,version_id]`, the format S3 Batch Operations
//! takes and S3 Inventory writes (optionally with more columns, which are ignored).
//! Keys are URL-encoded there: `%XX` escapes, and `+` for a space.

use std::io::Read;

/// One object named by a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The bucket.
    pub bucket: String,
    /// The key, decoded.
    pub key: String,
    /// The version ID, if the manifest names one.
    pub version: Option<String>,
}

/// Reads entries one at a time; the manifest is never held in memory whole.
pub fn read_manifest<R: Read>(reader: R) -> impl Iterator<Item = Result<ManifestEntry, String>> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut record = csv::StringRecord::new();
    let mut line = 0u64;
    std::iter::from_fn(move || {
        line += 1;
        match csv.read_record(&mut record) {
            Ok(false) => None,
            Ok(true) => Some(
                parse_manifest_line(record.iter())
                    .map_err(|e| format!("manifest line {line}: {e}")),
            ),
            Err(e) => Some(Err(format!("manifest line {line}: {e}"))),
        }
    })
}

/// Builds an entry from a line's fields.
pub fn parse_manifest_line<'a>(
    mut fields: impl Iterator<Item = &'a str>,
) -> Result<ManifestEntry, String> {
    let bucket = fields.next().unwrap_or_default().trim();
    let key = fields.next().unwrap_or_default();
    if bucket.is_empty() || key.is_empty() {
        return Err("expected bucket,key[,version_id]".into());
    }
    let key =
        url_decode_key(key).ok_or_else(|| format!("key {key:?} is not valid URL encoding"))?;
    let version = fields
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            url_decode_key(v).ok_or_else(|| format!("version {v:?} is not valid URL encoding"))
        })
        .transpose()?;
    Ok(ManifestEntry {
        bucket: bucket.to_string(),
        key,
        version,
    })
}

/// An S3 key as manifests and Batch Operations' schema 1.0 carry it: URL-encoded,
/// `+` for a space. `None` if it decodes to no UTF-8 text.
pub fn url_decode_key(s: &str) -> Option<String> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_operations_and_inventory_lines_parse() {
        let text = "b1,plain.txt\n\
                    b1,dir%2Fa+b%25.txt,3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY\n\
                    \"b2\",\"quoted%20key\",\"\",\"123\",\"2024-01-01\"\n";
        let entries: Vec<_> = read_manifest(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(entries[0].key, "plain.txt");
        assert_eq!(entries[0].version, None);
        assert_eq!(entries[1].key, "dir/a b%.txt");
        assert_eq!(
            entries[1].version.as_deref(),
            Some("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
        );
        assert_eq!(entries[2].bucket, "b2");
        assert_eq!(entries[2].key, "quoted key");
        assert_eq!(entries[2].version, None);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let errors: Vec<_> = read_manifest("ok,k\nonly-bucket\nb,%ZZ%FF\n".as_bytes())
            .filter_map(Result::err)
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("manifest line 2"), "{errors:?}");
        assert!(errors[1].starts_with("manifest line 3"), "{errors:?}");
    }
}

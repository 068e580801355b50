//! The contact directory behind `directoryMatches`: a CSV or JSON file of contacts, matched
//! on E.164 numbers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::numbers::NumberReader;

/// `[directory]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// A `.csv` (header row with the field names) or `.json` (an array of objects) file.
    pub path: Option<PathBuf>,
    /// The directory's name in matches (`dirName`).
    pub name: String,
    /// The directory's id in matches (`dirId`).
    pub id: String,
}

/// One contact. Field names are those of the CDR's contact directory item.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Contact {
    /// A unique id for the contact (`contactId`); the row number when absent.
    #[serde(alias = "contactId")]
    pub id: String,
    /// Mr, Mrs, Dr…
    pub title: String,
    /// Full name.
    pub full_name: String,
    /// Company.
    pub company_name: String,
    /// Position.
    pub job_title: String,
    /// Phone numbers (any format; matched in E.164).
    pub phone1: String,
    /// Second number.
    pub phone2: String,
    /// Third number.
    pub phone3: String,
    /// Fourth number.
    pub phone4: String,
    /// Email address.
    pub email: String,
    /// The contact's id in an external CRM.
    pub crm_id: String,
    /// Custom fields field1..field10.
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

/// A loaded directory: contacts indexed by E.164 number.
#[derive(Debug, Default)]
pub struct Directory {
    name: String,
    id: String,
    contacts: Vec<Contact>,
    by_number: HashMap<String, Vec<usize>>,
}

/// The directory file is unusable.
#[derive(Debug, thiserror::Error)]
#[error("contact directory {path}: {message}")]
pub struct DirectoryError {
    /// The file.
    pub path: String,
    /// What is wrong (with the row for CSV).
    pub message: String,
}

impl Directory {
    /// Loads the configured file; no file configured is an empty directory.
    pub fn load(cfg: &DirectoryConfig, numbers: &NumberReader) -> Result<Self, DirectoryError> {
        let Some(path) = &cfg.path else {
            return Ok(Directory::default());
        };
        let err = |message: String| DirectoryError {
            path: path.display().to_string(),
            message,
        };
        let contacts = read_contacts(path).map_err(err)?;
        Ok(Directory::from_contacts(
            &cfg.name, &cfg.id, contacts, numbers,
        ))
    }

    /// A directory over `contacts`.
    pub fn from_contacts(
        name: &str,
        id: &str,
        mut contacts: Vec<Contact>,
        numbers: &NumberReader,
    ) -> Self {
        let mut by_number: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in contacts.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = (i + 1).to_string();
            }
            for p in [&c.phone1, &c.phone2, &c.phone3, &c.phone4] {
                let n = numbers.read(p);
                if n.is_e164 {
                    let list = by_number.entry(n.e164).or_default();
                    if !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
        Directory {
            name: name.to_owned(),
            id: id.to_owned(),
            contacts,
            by_number,
        }
    }

    /// How many contacts there are.
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// The CDR `directoryMatches` items for an E.164 number.
    pub fn matches(&self, e164: &str) -> Vec<serde_json::Value> {
        let Some(idx) = self.by_number.get(e164) else {
            return Vec::new();
        };
        idx.iter()
            .map(|&i| {
                let c = &self.contacts[i];
                let mut fields = serde_json::Map::new();
                for (k, v) in [
                    ("title", &c.title),
                    ("fullName", &c.full_name),
                    ("companyName", &c.company_name),
                    ("jobTitle", &c.job_title),
                    ("phone1", &c.phone1),
                    ("phone2", &c.phone2),
                    ("phone3", &c.phone3),
                    ("phone4", &c.phone4),
                    ("email", &c.email),
                    ("crmId", &c.crm_id),
                ] {
                    if !v.is_empty() {
                        fields.insert(k.into(), v.clone().into());
                    }
                }
                for (k, v) in &c.extra {
                    if !v.is_empty() {
                        fields.insert(k.clone(), v.clone().into());
                    }
                }
                serde_json::json!({
                    "dirName": self.name,
                    "dirId": self.id,
                    "dirType": "DirectoryContactMatch",
                    "contactId": c.id,
                    "fields": fields,
                })
            })
            .collect()
    }
}

fn read_contacts(path: &Path) -> Result<Vec<Contact>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        return serde_json::from_str(&text).map_err(|e| e.to_string());
    }
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    // Rows are read as text first: a numeric custom field (`field10 = 301`) is still text.
    for (i, row) in rdr.deserialize::<BTreeMap<String, String>>().enumerate() {
        let row = row.map_err(|e| format!("row {}: {e}", i + 2))?;
        let value = serde_json::to_value(row).map_err(|e| e.to_string())?;
        out.push(serde_json::from_value(value).map_err(|e| format!("row {}: {e}", i + 2))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::numbers::NumbersConfig;

    #[test]
    fn csv_contacts_match_on_e164_whatever_the_written_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.csv");
        std::fs::write(
            &path,
            "fullName,companyName,phone1,phone2,email,field10\n\
             Example Contact,Company,07700 900123,,a@example.com,301\n\
             Other,Co,+14155550100,00447700900123,,\n",
        )
        .unwrap();
        let numbers = NumberReader::new(&NumbersConfig::default());
        let d = Directory::load(
            &DirectoryConfig {
                path: Some(path),
                name: "My Global".into(),
                id: "d1".into(),
            },
            &numbers,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        let m = d.matches("+447700900123");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["dirName"], "My Global");
        assert_eq!(m[0]["dirType"], "DirectoryContactMatch");
        assert_eq!(m[0]["fields"]["fullName"], "Example Contact");
        assert_eq!(m[0]["fields"]["field10"], "301");
        assert!(d.matches("+441610000000").is_empty());
    }

    #[test]
    fn a_bad_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        std::fs::write(&path, "fullName,phone1\n\"unterminated,1\n").unwrap();
        let numbers = NumberReader::new(&NumbersConfig::default());
        let cfg = DirectoryConfig {
            path: Some(path),
            ..Default::default()
        };
        let e = Directory::load(&cfg, &numbers).unwrap_err();
        assert!(e.to_string().contains("c.csv"), "{e}");
    }
}

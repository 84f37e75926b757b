//! Deterministic generation of a Sage People org, one employee record at a time.
//!
//! Record `index` of org `seed` is computed from those two numbers alone, so the simulator can
//! serve a million workers without holding them in memory, and every test run sees the same
//! awkward data: non-ASCII and apostrophe names, mixed-case or missing e-mails, leavers, nulls.

use serde_json::{Value, json};

use crate::rng::SplitMix;

/// Prefix of every generated worker id: a Salesforce key prefix plus org-specific characters.
const ID_PREFIX: &str = "a2G7E";
/// Number of base62 digits after the prefix (5 + 10 = 15, the length of a case-sensitive
/// Salesforce id).
const ID_DIGITS: usize = 10;
/// Length of a case-sensitive Salesforce id, before the case suffix.
const ID15_LEN: usize = 15;
/// Base62 digits in ASCII order, so that ids sort byte-wise in index order.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// The characters of the case suffix, indexed by a group's 5-bit upper-case mask.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Salts that give each concern of a record its own random stream.
const IDENTITY_SALT: u64 = 0x1D3A_7C00_0000_0001;
const DETAILS_SALT: u64 = 0x0DE7_A115_0000_0002;

/// Deterministic employee record number `index` (0-based) of a seeded org, as Sage People JSON.
///
/// The shape is that of one element of `data` in the Employees API v4 response.
pub fn worker(seed: u64, index: u64) -> Value {
    let person = identity(seed, index);
    let mut r = SplitMix::for_item(seed ^ DETAILS_SALT, index);

    let department = if r.per_mille(30) {
        None
    } else {
        Some(*r.pick(DEPARTMENTS))
    };
    let employment = employment(&mut r, index);
    let address = if r.per_mille(20) {
        Value::Null
    } else {
        office(r.pick(OFFICES))
    };

    let cost_centre = if r.per_mille(30) {
        Value::Null
    } else {
        Value::String(format!("CC-{}", 100 + r.below(60)))
    };
    let manager_email = if index == 0 || r.per_mille(100) {
        Value::Null
    } else {
        identity(seed, (index - 1) / 8)
            .email
            .map_or(Value::Null, Value::String)
    };

    json!({
        "id": worker_id(index),
        "fullName": person.full,
        "firstName": person.first,
        "lastName": person.last,
        "emailAddress": person.email,
        "hrDepartment": department,
        "currentEmployment": employment,
        "workAddress": address,
        "additionalFields": [
            {"name": "Cost Centre", "value": cost_centre, "source": "fHCM2__Cost_Centre__c"},
            {"name": "Manager Email", "value": manager_email,
             "source": "fHCM2__Manager__r.fHCM2__Email__c"},
            {"name": "Employee Number", "value": format!("E{:07}", index + 1),
             "source": "fHCM2__Unique_Id__c"},
        ],
    })
}

/// The 18-char Salesforce-style id of worker `index`.
///
/// The first 15 characters are the case-sensitive id: `a2G7E` and 10 zero-padded base62 digits
/// of the index (alphabet `0-9A-Za-z`), so that ids sort byte-wise in index order. The last 3
/// are Salesforce's case suffix ([`with_case_suffix`]), so that, as with real 18-char ids, no two
/// ids differ only in letter case. Indexes from 62^10 on do not fit and wrap around.
pub fn worker_id(index: u64) -> String {
    let mut digits = [b'0'; ID_DIGITS];
    let mut n = index;
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    let mut id = String::with_capacity(ID15_LEN + 3);
    id.push_str(ID_PREFIX);
    id.extend(digits.iter().map(|&b| char::from(b)));
    let suffix = case_suffix(id.as_bytes());
    id.extend(suffix.iter().map(|&b| char::from(b)));
    id
}

/// The 18-char form of a 15-char case-sensitive Salesforce id: `id15` followed by 3 characters
/// that encode which of its characters are upper-case letters, or `None` unless `id15` is 15
/// ASCII letters and digits.
///
/// Each character of the suffix stands for a group of 5 characters of `id15`: bit `i` of the
/// group's number is set when its `i`-th character is `A`–`Z`, and the number (0–31) picks from
/// `A`–`Z` then `0`–`5`.
pub fn with_case_suffix(id15: &str) -> Option<String> {
    if id15.len() != ID15_LEN || !id15.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut id = String::with_capacity(ID15_LEN + 3);
    id.push_str(id15);
    id.extend(case_suffix(id15.as_bytes()).iter().map(|&b| char::from(b)));
    Some(id)
}

/// The 3-character case suffix of the 15 bytes `id15`.
fn case_suffix(id15: &[u8]) -> [u8; 3] {
    let mut suffix = [b'A'; 3];
    for (slot, group) in suffix.iter_mut().zip(id15.chunks(5)) {
        let mask = group
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |mask, (bit, _)| mask | 1 << bit);
        *slot = SUFFIX_ALPHABET[mask];
    }
    suffix
}

/// The index of a worker id made by [`worker_id`], or `None` for anything else: it must be
/// `a2G7E`, 10 base62 digits and the case suffix of those 15 characters, exactly.
pub fn index_of(id: &str) -> Option<u64> {
    if id.len() != ID15_LEN + 3 || !id.is_ascii() {
        return None;
    }
    let (id15, suffix) = id.split_at(ID15_LEN);
    if suffix.as_bytes() != case_suffix(id15.as_bytes()) {
        return None;
    }
    let digits = id15.strip_prefix(ID_PREFIX)?;
    digits.bytes().try_fold(0u64, |n, b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'a'..=b'z' => b - b'a' + 36,
            _ => return None,
        };
        n.checked_mul(62)?.checked_add(u64::from(d))
    })
}

/// Names and e-mail of one worker; also used to give other workers their manager's e-mail.
struct Identity {
    first: Option<String>,
    last: Option<String>,
    full: Option<String>,
    email: Option<String>,
}

/// A name as written and as it appears in an e-mail local part.
type Name = (&'static str, &'static str);

fn identity(seed: u64, index: u64) -> Identity {
    let mut r = SplitMix::for_item(seed ^ IDENTITY_SALT, index);
    let culture = r.below(100);
    let (first, last, family_name_first) = if culture < 12 {
        (r.pick(JAPANESE_GIVEN), r.pick(JAPANESE_FAMILY), true)
    } else if culture < 22 {
        (r.pick(VIETNAMESE_GIVEN), r.pick(VIETNAMESE_FAMILY), true)
    } else {
        (r.pick(GIVEN), r.pick(FAMILY), false)
    };

    let first_name = if r.per_mille(5) { None } else { Some(first.0) };
    let full = match (first_name, family_name_first) {
        (None, _) => last.0.to_string(),
        (Some(f), true) => format!("{} {f}", last.0),
        (Some(f), false) => format!("{f} {}", last.0),
    };

    // The index keeps e-mails unique across the org, even once lower-cased.
    let domain = *r.pick(DOMAINS);
    let local = format!("{}.{}.{index}", first.1, last.1);
    let roll = r.below(1000);
    let email = if roll < 20 {
        None
    } else if roll < 25 {
        Some(String::new())
    } else if roll < 75 {
        Some(format!(
            "{}@{}",
            capitalise_parts(&local),
            capitalise_parts(domain)
        ))
    } else if roll < 125 {
        Some(format!("{local}@{domain}").to_uppercase())
    } else {
        Some(format!("{local}@{domain}"))
    };

    Identity {
        first: first_name.map(str::to_string),
        last: Some(last.0.to_string()),
        full: Some(full),
        email,
    }
}

/// `ada.lovelace.7` → `Ada.Lovelace.7`.
fn capitalise_parts(s: &str) -> String {
    s.split('.')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(c) => c.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn employment(r: &mut SplitMix, index: u64) -> Value {
    if r.per_mille(10) {
        return Value::Null;
    }
    let year = 2005 + r.below(21);
    let month = 1 + r.below(12);
    let day = 1 + r.below(28);
    let leaver = r.per_mille(50);
    let end_date = if leaver {
        let end_year = (year + 1 + r.below(5)).min(2026);
        Some(format!(
            "{end_year}-{:02}-{:02}",
            1 + r.below(12),
            1 + r.below(28)
        ))
    } else if r.per_mille(10) {
        // Someone serving notice: still active, leaving date in the future.
        Some(format!(
            "2027-{:02}-{:02}",
            1 + r.below(12),
            1 + r.below(28)
        ))
    } else {
        None
    };
    let title = if r.per_mille(20) {
        None
    } else {
        Some(*r.pick(JOB_TITLES))
    };
    json!({
        "name": format!("{year}.{month:02} #{}", index % 97 + 1),
        "jobTitle": title,
        "startDate": format!("{year}-{month:02}-{day:02}"),
        "endDate": end_date,
        "active": !leaver,
    })
}

/// One office: name, line 1, line 2, city, region, postal code, country.
type Office = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

fn office(o: &Office) -> Value {
    let (name, line1, line2, city, region, postal, country) = *o;
    json!({
        "name": name, "line1": line1, "line2": line2, "line3": null,
        "city": city, "region": region, "postalCode": postal, "country": country,
    })
}

#[rustfmt::skip]
const OFFICES: &[Office] = &[
    ("London HQ", Some("1 Example Street"), None, "London", Some("Greater London"), Some("EC1A 1AA"), "United Kingdom"),
    ("Manchester", Some("2 Piccadilly Place"), Some("Floor 3"), "Manchester", None, Some("M1 3BN"), "United Kingdom"),
    ("Paris", Some("12 rue de l'Église"), None, "Paris", Some("Île-de-France"), Some("75008"), "France"),
    ("Lyon", Some("5 place Bellecour"), None, "Lyon", Some("Auvergne-Rhône-Alpes"), Some("69002"), "France"),
    ("Berlin", Some("Friedrichstraße 100"), None, "Berlin", Some("Berlin"), Some("10117"), "Germany"),
    ("München", Some("Marienplatz 8"), Some("3. OG"), "München", Some("Bayern"), Some("80331"), "Germany"),
    ("New York", Some("350 Fifth Avenue"), Some("Suite 4100"), "New York", Some("NY"), Some("10118"), "United States"),
    ("San Francisco", Some("1 Market Street"), None, "San Francisco", Some("CA"), Some("94105"), "United States"),
    ("Tokyo", Some("1-1-1 Marunouchi"), Some("Chiyoda-ku"), "東京", Some("東京都"), Some("100-0005"), "Japan"),
    ("Dublin", Some("1 Grand Canal Square"), None, "Dublin", Some("Co. Dublin"), Some("D02 P820"), "Ireland"),
    ("Remote (Spain)", None, None, "Madrid", None, None, "Spain"),
];

#[rustfmt::skip]
const DEPARTMENTS: &[&str] = &[
    "Engineering", "Finance", "People", "Sales", "Marketing", "Customer Success", "Legal",
    "Operations", "R&D", "Research & Development",
];

#[rustfmt::skip]
const JOB_TITLES: &[&str] = &[
    "Software Engineer", "Principal Engineer", "Accountant", "HR Business Partner",
    "Account Executive", "Marketing Manager", "Support Specialist", "Counsel",
    "Operations Analyst", "VP, Sales", "Head of R&D", "Ingénieur logiciel",
];

const DOMAINS: &[&str] = &[
    "example.com",
    "example.co.uk",
    "example.fr",
    "example.de",
    "example.jp",
];

#[rustfmt::skip]
const GIVEN: &[Name] = &[
    ("José", "jose"), ("Zoë", "zoe"), ("Łukasz", "lukasz"), ("Søren", "soren"), ("Ada", "ada"),
    ("Anne-Marie", "anne-marie"), ("Siobhán", "siobhan"), ("François", "francois"),
    ("Jürgen", "jurgen"), ("Oliver", "oliver"), ("Amelia", "amelia"), ("Mohammed", "mohammed"),
    ("Priya", "priya"), ("Chloé", "chloe"), ("Dmitri", "dmitri"), ("Mary Jane", "maryjane"),
    ("Björn", "bjorn"), ("Ngozi", "ngozi"),
];

#[rustfmt::skip]
const FAMILY: &[Name] = &[
    ("O'Brien", "o'brien"), ("Smith-Jones", "smith-jones"), ("García", "garcia"),
    ("Müller", "muller"), ("Kowalski", "kowalski"), ("Lovelace", "lovelace"),
    ("D'Angelo", "dangelo"), ("Ní Bhriain", "nibhriain"), ("van der Berg", "vanderberg"),
    ("Østergaard", "ostergaard"), ("Brontë", "bronte"), ("MacDonald", "macdonald"),
    ("Dubois", "dubois"), ("Patel", "patel"), ("Wójcik", "wojcik"), ("Okafor", "okafor"),
];

#[rustfmt::skip]
const JAPANESE_GIVEN: &[Name] = &[("太郎", "taro"), ("花子", "hanako"), ("健", "ken"), ("さくら", "sakura")];
#[rustfmt::skip]
const JAPANESE_FAMILY: &[Name] = &[("山田", "yamada"), ("佐藤", "sato"), ("鈴木", "suzuki"), ("高橋", "takahashi")];
#[rustfmt::skip]
const VIETNAMESE_GIVEN: &[Name] = &[("Văn An", "van.an"), ("Thị Hương", "thi.huong"), ("Minh", "minh"), ("Đức", "duc")];
#[rustfmt::skip]
const VIETNAMESE_FAMILY: &[Name] = &[("Nguyễn", "nguyen"), ("Trần", "tran"), ("Lê", "le"), ("Phạm", "pham")];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sample(n: u64) -> Vec<Value> {
        (0..n).map(|i| worker(42, i)).collect()
    }

    fn share(records: &[Value], pred: impl Fn(&Value) -> bool) -> f64 {
        records.iter().filter(|r| pred(r)).count() as f64 / records.len() as f64
    }

    /// The first index whose 15-char id does not fit in 10 base62 digits.
    const ID_SPACE: u64 = 62u64.pow(10);

    #[test]
    fn the_case_suffix_matches_published_conversions() {
        // Examples published with Salesforce id converters (the `salesforce_id_converter` PyPI
        // package and the `salesforce_id_formatter` gem).
        let published = [
            ("00558000001N0Ke", "00558000001N0KeAAK"),
            ("70130000001tcyI", "70130000001tcyIAAQ"),
        ];
        for (id15, id18) in published {
            assert_eq!(with_case_suffix(id15).as_deref(), Some(id18), "{id15}");
        }
        // Worked by hand: group `a2G7E` has upper-case G (bit 2) and E (bit 4): 20 is `U`; group
        // `ABCDE` is all upper-case: 31 is `5`; group `zZ00Q` has Z (bit 1) and Q (bit 4): 18.
        assert_eq!(
            with_case_suffix("a2G7EABCDEzZ00Q").as_deref(),
            Some("a2G7EABCDEzZ00QU5S")
        );
        assert_eq!(
            with_case_suffix("abcdefghijklmno").as_deref(),
            Some("abcdefghijklmnoAAA")
        );
        for bad in [
            "",
            "a2G7E00000000",
            "a2G7E00000000000",
            "a2G7E0000000-00",
            "a2G7E000000000é",
        ] {
            assert_eq!(with_case_suffix(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_an_18_char_id_with_its_case_suffix() {
        assert_eq!(worker_id(0), "a2G7E0000000000UAA");
        assert_eq!(worker_id(63), "a2G7E0000000011UAA");
        // Indexes 16 and 42 were ids that differed only in case before the suffix.
        assert_eq!(worker_id(16), "a2G7E000000000GUAQ");
        assert_eq!(worker_id(42), "a2G7E000000000gUAA");
        for i in [0, 1, 16, 42, 61, 62, 3_843, 1_000_000, ID_SPACE - 1] {
            let id = worker_id(i);
            assert_eq!(id.len(), 18, "{id}");
            assert_eq!(with_case_suffix(&id[..15]).as_deref(), Some(id.as_str()));
        }
    }

    #[test]
    fn ids_round_trip() {
        let indices = (0..20_000).chain([
            238_327, // 62^3 - 1
            238_328,
            1_000_000,
            ID_SPACE / 3,
            ID_SPACE - 1,
        ]);
        for i in indices {
            assert_eq!(index_of(&worker_id(i)), Some(i), "{i}");
        }
    }

    #[test]
    fn ids_sort_byte_wise_in_index_order() {
        let indices: Vec<u64> = (0..20_000)
            .chain((1..60).map(|k| k * (ID_SPACE / 60))) // spread over the id space
            .chain([ID_SPACE - 1])
            .collect();
        let ids: Vec<String> = indices.iter().map(|&i| worker_id(i)).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids in index order are strictly ascending in bytes"
        );
    }

    #[test]
    fn ids_are_unique_without_regard_to_case() {
        let ids: Vec<String> = (0..100_000)
            .chain((1..1_000).map(|k| k * (ID_SPACE / 1_000)))
            .map(|i| worker_id(i).to_lowercase())
            .collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn index_of_refuses_foreign_and_garbled_ids() {
        let good = worker_id(16);
        for bad in [
            "",
            "a2G7E",
            "a2G7E000000000G",     // no suffix
            "a2G7E000000000GUA",   // short suffix
            "a2G7E000000000GUAQA", // long suffix
            "a2G7E000000000GUAA",  // wrong suffix
            "a2G7E000000000guaq",  // the right id, lower-cased
            "A2G7E000000000GUAQ",  // the right id, upper-cased
            "a2G7E000000000gUAQ",  // a digit in another case: suffix no longer matches
            "b2G7E000000000GUAQ",
            "a2G7e000000000GEAQ", // a well-formed 18-char id, but not of this org's prefix
            "a2G7E00000000!0UAA",
            "a2G7E0000000é0UAA",
            "a2G7E0000000000000", // the old 13-digit shape of index 0
            "a2G7E000000000005G", // the old 13-digit shape of index 16
            "zzzzzzzzzzzzzzzAAA",
        ] {
            assert_ne!(bad, good);
            assert_eq!(index_of(bad), None, "{bad}");
        }
        assert_eq!(index_of(&good), Some(16));
    }

    #[test]
    fn records_are_deterministic_per_seed_and_index() {
        assert_eq!(worker(42, 17), worker(42, 17));
        assert_ne!(worker(42, 17), worker(43, 17));
        assert_eq!(worker(42, 17)["id"], worker_id(17));
    }

    #[test]
    fn emails_are_unique_even_lower_cased() {
        let records = sample(5_000);
        let emails: Vec<String> = records
            .iter()
            .filter_map(|r| r["emailAddress"].as_str())
            .filter(|e| !e.is_empty())
            .map(str::to_lowercase)
            .collect();
        let unique: HashSet<&String> = emails.iter().collect();
        assert_eq!(unique.len(), emails.len());
        assert!(emails.len() > 4_700);
    }

    #[test]
    fn the_awkward_shares_are_roughly_as_documented() {
        let records = sample(20_000);
        let email_null = share(&records, |r| r["emailAddress"].is_null());
        let email_blank = share(&records, |r| r["emailAddress"] == "");
        let email_cased = share(&records, |r| {
            r["emailAddress"]
                .as_str()
                .is_some_and(|e| e != e.to_lowercase())
        });
        let no_employment = share(&records, |r| r["currentEmployment"].is_null());
        let no_address = share(&records, |r| r["workAddress"].is_null());
        let leavers = share(&records, |r| r["currentEmployment"]["active"] == false);
        assert!((0.01..0.03).contains(&email_null), "{email_null}");
        assert!((0.001..0.01).contains(&email_blank), "{email_blank}");
        assert!((0.07..0.13).contains(&email_cased), "{email_cased}");
        assert!((0.005..0.02).contains(&no_employment), "{no_employment}");
        assert!((0.01..0.03).contains(&no_address), "{no_address}");
        assert!((0.035..0.065).contains(&leavers), "{leavers}");
    }

    #[test]
    fn leavers_have_an_end_date_after_their_start() {
        for r in sample(3_000) {
            let e = &r["currentEmployment"];
            if e["active"] == false {
                let (start, end) = (e["startDate"].as_str(), e["endDate"].as_str());
                assert!(end.is_some() && end > start, "{e}");
            }
        }
    }

    #[test]
    fn names_include_non_ascii_apostrophes_and_hyphens() {
        let records = sample(3_000);
        let full: Vec<&str> = records
            .iter()
            .filter_map(|r| r["fullName"].as_str())
            .collect();
        for needle in [
            "José",
            "Zoë",
            "Łukasz",
            "Søren",
            "山田",
            "Nguyễn",
            "O'Brien",
            "Smith-Jones",
        ] {
            assert!(full.iter().any(|n| n.contains(needle)), "{needle}");
        }
        assert!(
            full.iter().any(|n| n.starts_with("山田 ")),
            "family name first in Japanese"
        );
    }

    #[test]
    fn countries_vary_and_additional_fields_carry_sources() {
        let records = sample(2_000);
        let countries: HashSet<&str> = records
            .iter()
            .filter_map(|r| r["workAddress"]["country"].as_str())
            .collect();
        for c in [
            "United Kingdom",
            "France",
            "Germany",
            "United States",
            "Japan",
        ] {
            assert!(countries.contains(c), "{c}");
        }
        for r in &records {
            let extra = r["additionalFields"]
                .as_array()
                .expect("additionalFields is an array");
            assert!(
                extra
                    .iter()
                    .all(|f| f["source"].is_string() && f.get("value").is_some())
            );
        }
        assert!(
            records
                .iter()
                .any(|r| r["additionalFields"][1]["value"].is_null())
        );
        assert!(
            records
                .iter()
                .any(|r| r["additionalFields"][1]["value"].is_string())
        );
    }
}

//! Name comparison shared by validation ("did you mean …?") and smart mapping: names are
//! normalised to lower-case alphanumeric words, then compared by edit distance and shared
//! words. Numbers must agree exactly, so "Address line 1" never resembles "Address line 2".

/// Lower-case alphanumeric words of `name`: "HR-Department_x" → ["hr", "department", "x"].
/// A change from lower to upper case also starts a word, so "jobTitle" → ["job", "title"].
pub(crate) fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && previous_lower && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = c.is_lowercase() || c.is_numeric();
            current.extend(c.to_lowercase());
        } else {
            previous_lower = false;
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `name` normalised for comparison: its words joined without separators.
pub(crate) fn normalise(name: &str) -> String {
    words(name).concat()
}

/// How alike two names are, from 0 (nothing in common) to 1 (same normalised name).
///
/// The best of normalised Levenshtein similarity and the share of the longer name's words
/// that both have (weighted 0.9, so a word match never beats an exact one). Names whose
/// digits differ score 0.
pub(crate) fn similarity(a: &str, b: &str) -> f64 {
    let (wa, wb) = (words(a), words(b));
    let (na, nb) = (wa.concat(), wb.concat());
    if na.is_empty() || nb.is_empty() {
        return 0.0;
    }
    if na == nb {
        return 1.0;
    }
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    if digits(&na) != digits(&nb) {
        return 0.0;
    }
    let edit = strsim::normalized_levenshtein(&na, &nb);
    let shared = wa.iter().filter(|w| wb.contains(w)).count();
    let overlap = shared as f64 / wa.len().max(wb.len()).max(1) as f64;
    edit.max(overlap * 0.9)
}

/// The candidate most like `name`, when it is alike enough to be a plausible typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for candidate in candidates {
        let (a, b) = (name.to_lowercase(), candidate.to_lowercase());
        // Jaro-Winkler forgives swapped letters in short keys ("mood" → "mode").
        let score = strsim::normalized_levenshtein(&a, &b)
            .max(similarity(name, candidate))
            .max(strsim::jaro_winkler(&a, &b) - 0.2);
        if score >= 0.6 && best.is_none_or(|(_, b)| score > b) {
            best = Some((candidate, score));
        }
    }
    best.map(|(c, _)| c)
}

/// "; did you mean `x`?" when a close candidate exists, otherwise "".
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    closest(name, candidates).map_or_else(String::new, |c| format!("; did you mean \"{c}\"?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_separators_and_camel_case() {
        assert_eq!(words("HR-Department_x"), ["hr", "department", "x"]);
        assert_eq!(words("jobTitle"), ["job", "title"]);
        assert_eq!(words("Connect: Hostname"), ["connect", "hostname"]);
        assert_eq!(words("Straße Nr. 1"), ["straße", "nr", "1"]);
    }

    #[test]
    fn identical_names_after_normalising_score_one() {
        assert_eq!(similarity("Job Title", "job_title"), 1.0);
        assert_eq!(similarity("FIRST_NAME", "First Name"), 1.0);
    }

    #[test]
    fn names_with_different_numbers_never_match() {
        assert_eq!(similarity("Address line 1", "Address line 2"), 0.0);
    }

    #[test]
    fn shared_words_count_towards_similarity() {
        assert!(similarity("HR Department", "Department") >= 0.8);
        assert!(similarity("Work Location", "Location Work") >= 0.9);
        assert!(similarity("Start Date", "End Date") < 0.75);
        assert!(similarity("First Name", "Name") < 0.75);
    }

    #[test]
    fn closest_suggests_plausible_typos_only() {
        let names = ["Email", "Job Title", "City"];
        assert_eq!(closest("Emial", names), Some("Email"));
        assert_eq!(closest("job titel", names), Some("Job Title"));
        assert_eq!(closest("Favourite colour", names), None);
        assert_eq!(
            closest("mood", ["mode", "condition", "restore_archived"]),
            Some("mode")
        );
        assert_eq!(
            closest("colour", ["id", "type", "preference", "sync_keys"]),
            None
        );
    }
}

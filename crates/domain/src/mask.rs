//! Masked forms of a payer's identifiers, for logs: enough to tell two payers apart while
//! reading one incident, not enough to name either. A log line is read by more people, and
//! kept in more places, than the database it came from.

/// A payer id (a WeChat openid, a merchant's own user id): its first three and last three
/// characters around `***`; an id of eight characters or fewer shows none of them.
pub fn payer(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return "***".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}***{tail}")
}

/// A phone number: its country code (when written `+CC…`, China's `+86` taken as two digits)
/// and first three digits, then `****` and its last four digits; a number too short to keep
/// eight digits hidden shows only its last two.
pub fn phone(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let (country, national) = match number.strip_prefix('+') {
        Some(_) if digits.starts_with("86") => ("+86", &digits[2..]),
        Some(_) => ("+", digits.as_str()),
        None => ("", digits.as_str()),
    };
    if national.len() < 11 {
        let tail = &national[national.len().saturating_sub(2)..];
        return format!("{country}***{tail}");
    }
    format!("{country}{}****{}", &national[..3], &national[national.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payer_ids_keep_three_characters_at_each_end() {
        assert_eq!(payer("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"), "oUp***S6o");
        assert_eq!(payer("payer-c41d0000-imported"), "pay***ted");
        assert_eq!(payer("付款人甲乙丙丁戊己"), "付款人***丁戊己");
        assert_eq!(payer("payer-01"), "***", "short ids show nothing");
        assert_eq!(payer(""), "***");
    }

    #[test]
    fn phone_numbers_hide_the_middle() {
        assert_eq!(phone("+8613912345678"), "+86139****5678");
        assert_eq!(phone("13912345678"), "139****5678");
        assert_eq!(phone("+86 139 1234 5678"), "+86139****5678");
        assert_eq!(phone("+14155550123"), "+141****0123");
        assert_eq!(phone("+8612345"), "+86***45", "too short to keep eight digits hidden");
        assert_eq!(phone(""), "***");
    }
}

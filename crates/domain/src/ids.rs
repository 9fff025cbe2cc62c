//! Typed ids, parsed once at the edge.
use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {0} characters")]
    TooLong(usize),
    #[error("may hold only letters, digits, '-', '_' and '.'")]
    BadCharacter,
    #[error("is not a valid id: {0}")]
    Malformed(String),
}

/// External references (merchants, payers) are opaque strings chosen by their owners.
fn parse_reference(s: &str) -> Result<String, IdError> {
    const MAX: usize = 64;
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX {
        return Err(IdError::TooLong(MAX));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(IdError::BadCharacter);
    }
    Ok(s.to_string())
}

macro_rules! reference_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);
        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                parse_reference(s).map($name)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

reference_id!(
    /// A merchant's id on the platform.
    MerchantId
);
reference_id!(
    /// The merchant's reference for the paying user.
    PayerId
);

/// Namespace for ids derived from other ids (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b4d_4e0a_8f71_2d5c_0b9e_a417);

/// A contract's id: `ct_` followed by a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContractId(Uuid);

impl ContractId {
    /// A fresh id (time-ordered).
    pub fn generate() -> Self {
        ContractId(Uuid::now_v7())
    }

    /// The id a sign request with this idempotency key got before the keys were stored
    /// (contracts now get generated ids, and the key is recorded with the contract): how a
    /// repeated request still finds a contract signed then.
    pub fn from_idempotency_key(merchant: &MerchantId, key: &str) -> Self {
        let name = format!("contract\0{}\0{}", merchant.as_str(), key);
        ContractId(Uuid::new_v5(&NAMESPACE, name.as_bytes()))
    }

    /// The id of the contract a signing session signs: the same for the session every time,
    /// and time-ordered like a generated one (the session's opening time leads), so that
    /// contracts signed around the same time, and their charges, sit together in indexes.
    pub fn for_signing_session(merchant: &MerchantId, session_id: &str, opened_at_ms: i64) -> Self {
        Self::time_led(&format!("contract\0{}\0signing-session\0{session_id}", merchant.as_str()), opened_at_ms)
    }

    /// The id of the contract an import under idempotency key `key` signs at `signed_at_ms`:
    /// time-ordered like a generated one, the rest derived from the merchant and the key, so
    /// the same imports on the same clock (a test clock) sign the same ids.
    pub fn for_import(merchant: &MerchantId, key: &str, signed_at_ms: i64) -> Self {
        Self::time_led(&format!("contract\0{}\0import\0{key}", merchant.as_str()), signed_at_ms)
    }

    /// A UUID v5 of `name` whose first six bytes are `at_ms`.
    fn time_led(name: &str, at_ms: i64) -> Self {
        let hash = Uuid::new_v5(&NAMESPACE, name.as_bytes());
        let mut b = *hash.as_bytes();
        b[..6].copy_from_slice(&at_ms.max(0).to_be_bytes()[2..]);
        ContractId(custom(b))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        parse_prefixed(s, "ct_").map(ContractId)
    }

    /// Its first eight bytes: ids of things that belong to the contract lead with them, so
    /// that they sort with it (signing time first).
    pub fn leading_bytes(&self) -> [u8; 8] {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0.as_bytes()[..8]);
        b
    }

    pub fn stream(&self) -> String {
        format!("contract-{self}")
    }
}

impl fmt::Display for ContractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ct_{}", self.0.simple())
    }
}

/// A charge's id: derived from (contract, billing period), so a due charge can exist once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChargeId(Uuid);

/// A UUID of version 8 (custom layout, RFC 9562) from `b`.
fn custom(mut b: [u8; 16]) -> Uuid {
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

impl ChargeId {
    /// The charge of `contract` called `what`: the contract id's first eight bytes, then eight
    /// of a UUID v5 of both. A contract's charges sit together in the event log's stream index,
    /// and those of contracts signed around the same time (time-ordered contract ids) next to
    /// each other; the due loop issues them in about that order, so the index takes them as
    /// near-appends instead of inserts at random places, which at a million contracts is the
    /// difference between the store's random and sequential insert rates.
    fn derived(contract: ContractId, what: &str) -> Self {
        let hash = Uuid::new_v5(&NAMESPACE, format!("charge\0{contract}\0{what}").as_bytes());
        let mut b = *hash.as_bytes();
        b[..8].copy_from_slice(&contract.leading_bytes());
        ChargeId(custom(b))
    }

    pub fn for_period(contract: ContractId, period: u32) -> Self {
        Self::derived(contract, &format!("period\0{period}"))
    }

    /// The merchant order number of attempt `attempt` of this charge, as providers need one
    /// per attempt (WeChat Pay debits an `out_trade_no` at most once, and a retry needs a new
    /// one): the charge id in base 36 and the attempt, at most 29 characters of `[0-9a-z_]`
    /// (WeChat Pay allows 32), the same every time it is derived.
    pub fn out_trade_no(&self, attempt: u32) -> String {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut n = self.0.as_u128();
        let mut out = Vec::with_capacity(25);
        while n > 0 {
            out.push(DIGITS[(n % 36) as usize]);
            n /= 36;
        }
        out.resize(25, b'0');
        out.reverse();
        format!("{}_{attempt}", String::from_utf8_lossy(&out))
    }

    /// The charge and attempt an order number of `out_trade_no` names; `None` for any other text.
    pub fn from_out_trade_no(s: &str) -> Option<(ChargeId, u32)> {
        let (digits, attempt) = s.split_once('_')?;
        if digits.len() != 25 {
            return None;
        }
        let mut n: u128 = 0;
        for c in digits.bytes() {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'z' => c - b'a' + 10,
                _ => return None,
            };
            n = n.checked_mul(36)?.checked_add(u128::from(d))?;
        }
        let id = ChargeId(Uuid::from_u128(n));
        let attempt: u32 = attempt.parse().ok()?;
        (id.out_trade_no(attempt) == s).then_some((id, attempt))
    }

    /// A usage period's charge; apart from the fixed periods of the same contract.
    pub fn for_usage(contract: ContractId, period: u32) -> Self {
        Self::derived(contract, &format!("usage\0{period}"))
    }

    pub fn for_trigger(contract: ContractId, idempotency_key: &str) -> Self {
        Self::derived(contract, &format!("trigger\0{idempotency_key}"))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        parse_prefixed(s, "ch_").map(ChargeId)
    }

    pub fn stream(&self) -> String {
        format!("charge-{self}")
    }
}

impl fmt::Display for ChargeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ch_{}", self.0.simple())
    }
}

fn parse_prefixed(s: &str, prefix: &str) -> Result<Uuid, IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let rest = s.strip_prefix(prefix).ok_or_else(|| IdError::Malformed(format!("expected the prefix {prefix:?}")))?;
    Uuid::try_parse(rest).map_err(|e| IdError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_trade_numbers_are_short_stable_and_distinct_per_attempt() {
        let c = ChargeId::for_period(ContractId::generate(), 3);
        let (a, b) = (c.out_trade_no(1), c.out_trade_no(2));
        assert_eq!(a, c.out_trade_no(1));
        assert_ne!(a, b);
        assert!(a.len() <= 32 && c.out_trade_no(999).len() <= 32, "{a}");
        assert!(a.bytes().all(|x| x.is_ascii_digit() || x.is_ascii_lowercase() || x == b'_'), "{a}");
        let other = ChargeId::for_period(ContractId::generate(), 3);
        assert_ne!(other.out_trade_no(1), a);
    }

    #[test]
    fn order_numbers_name_their_charge_and_attempt() {
        let c = ChargeId::for_period(ContractId::generate(), 3);
        assert_eq!(ChargeId::from_out_trade_no(&c.out_trade_no(2)), Some((c, 2)));
        let upper = c.out_trade_no(2).to_uppercase();
        let dashed = c.out_trade_no(2).replace('_', "-");
        for bad in ["", "x_1", "zzzzzzzzzzzzzzzzzzzzzzzzz_1", &upper, &dashed] {
            assert_eq!(ChargeId::from_out_trade_no(bad), None, "{bad}");
        }
    }

    #[test]
    fn contract_ids_round_trip() {
        let id = ContractId::generate();
        assert_eq!(ContractId::parse(&id.to_string()).unwrap(), id);
        assert!(ContractId::parse("ch_0000").is_err());
        assert_eq!(ContractId::parse(""), Err(IdError::Empty));
    }

    #[test]
    fn charges_sort_with_their_contracts_signing_time() {
        let m = MerchantId::parse("m1").unwrap();
        let earlier = ContractId::for_signing_session(&m, "s9", 1_700_000_000_000);
        let later = ContractId::for_signing_session(&m, "s1", 1_700_000_000_001);
        assert_eq!(ContractId::for_signing_session(&m, "s9", 1_700_000_000_000), earlier);
        assert_eq!(ContractId::parse(&earlier.to_string()).unwrap(), earlier);
        assert!(earlier.to_string() < later.to_string());
        for (a, b) in [(9, 1), (1, 9)] {
            let (x, y) = (ChargeId::for_period(earlier, a), ChargeId::for_period(later, b));
            assert!(x.stream() < y.stream(), "{x} {y}");
            assert_eq!(ChargeId::parse(&x.to_string()).unwrap(), x);
        }
        assert_ne!(ChargeId::for_usage(earlier, 1), ChargeId::for_period(earlier, 1));
    }

    #[test]
    fn imports_under_a_key_get_the_same_time_led_id_on_the_same_clock() {
        let (m, other) = (MerchantId::parse("m1").unwrap(), MerchantId::parse("m2").unwrap());
        let id = ContractId::for_import(&m, "k-1", 1_700_000_000_000);
        assert_eq!(ContractId::for_import(&m, "k-1", 1_700_000_000_000), id);
        assert_ne!(ContractId::for_import(&m, "k-2", 1_700_000_000_000), id);
        assert_ne!(ContractId::for_import(&other, "k-1", 1_700_000_000_000), id);
        assert_ne!(ContractId::for_signing_session(&m, "k-1", 1_700_000_000_000), id);
        assert!(id.to_string() < ContractId::for_import(&m, "k-0", 1_700_000_000_001).to_string());
        assert_eq!(ContractId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn charge_ids_derive_from_contract_and_period() {
        let c = ContractId::generate();
        assert_eq!(ChargeId::for_period(c, 3), ChargeId::for_period(c, 3));
        assert_ne!(ChargeId::for_period(c, 3), ChargeId::for_period(c, 4));
        assert_ne!(ChargeId::for_period(c, 3), ChargeId::for_period(ContractId::generate(), 3));
        assert_ne!(ChargeId::for_period(c, 3), ChargeId::for_trigger(c, "3"));
        let id = ChargeId::for_period(c, 1);
        assert_eq!(ChargeId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn idempotency_keys_are_scoped_by_merchant() {
        let a = MerchantId::parse("m-a").unwrap();
        let b = MerchantId::parse("m-b").unwrap();
        assert_eq!(ContractId::from_idempotency_key(&a, "k"), ContractId::from_idempotency_key(&a, "k"));
        assert_ne!(ContractId::from_idempotency_key(&a, "k"), ContractId::from_idempotency_key(&b, "k"));
    }

    #[test]
    fn references_are_checked() {
        assert!(MerchantId::parse("merchant_01.cn").is_ok());
        assert_eq!(MerchantId::parse(""), Err(IdError::Empty));
        assert_eq!(PayerId::parse("a b"), Err(IdError::BadCharacter));
        assert_eq!(PayerId::parse(&"x".repeat(65)), Err(IdError::TooLong(64)));
    }
}

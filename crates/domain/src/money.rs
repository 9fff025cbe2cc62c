//! Money in integer minor units of an ISO-4217 currency; no floats anywhere.
use std::fmt;

/// The hard platform maximum for one charge: 50,000 CNY, in fen.
pub const MAX_CHARGE_CNY_FEN: i64 = 5_000_000;

/// An ISO-4217 alphabetic code: three upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const CNY: Currency = Currency(*b"CNY");

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let b = code.as_bytes();
        if b.len() != 3 || !b.iter().all(|c| c.is_ascii_uppercase()) {
            return Err(MoneyError::BadCurrency(code.to_string()));
        }
        Ok(Currency([b[0], b[1], b[2]]))
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from three ASCII upper-case letters, so always valid UTF-8.
        std::str::from_utf8(&self.0).expect("currency code is ASCII")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency {0:?} is not a three-letter ISO-4217 code")]
    BadCurrency(String),
    #[error("amount {0} must be positive")]
    NotPositive(i64),
    #[error("amounts in {0} and {1} cannot be combined")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount overflows")]
    Overflow,
}

/// An amount of money: minor units (fen for CNY) and a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

impl Money {
    pub fn new(minor_units: i64, currency: Currency) -> Self {
        Money { minor_units, currency }
    }

    /// A strictly positive amount, as every charge must be.
    pub fn positive(minor_units: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor_units <= 0 {
            return Err(MoneyError::NotPositive(minor_units));
        }
        Ok(Money { minor_units, currency })
    }

    pub fn cny(fen: i64) -> Self {
        Money::new(fen, Currency::CNY)
    }

    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let sum = self.minor_units.checked_add(other.minor_units).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(sum, self.currency))
    }
}

/// `minor_units` of `currency` as [`Money`] shows them (`19.90 CNY`); a currency that is not a
/// code shows the bare units beside it.
pub fn display(minor_units: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => Money::new(minor_units, c).to_string(),
        Err(_) => format!("{minor_units} {currency}"),
    }
}

impl Money {
    /// The amount as a payer reads it: yuan with the sign in Chinese (`¥12.50`), the currency
    /// code in English (`CNY 12.50`); other currencies by code.
    pub fn payer_text(self, chinese: bool) -> String {
        let sign = if self.minor_units < 0 { "-" } else { "" };
        let abs = self.minor_units.unsigned_abs();
        let number = format!("{sign}{}.{:02}", abs / 100, abs % 100);
        match (self.currency.as_str(), chinese) {
            ("CNY", true) => format!("¥{number}"),
            (c, true) => format!("{number} {c}"),
            (c, false) => format!("{c} {number}"),
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor_units < 0 { "-" } else { "" };
        let abs = self.minor_units.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_uppercase_letters() {
        assert!(Currency::parse("CNY").is_ok());
        assert!(Currency::parse("cny").is_err());
        assert!(Currency::parse("CN").is_err());
        assert!(Currency::parse("CNYY").is_err());
    }

    #[test]
    fn positive_refuses_zero_and_negative() {
        assert_eq!(Money::positive(0, Currency::CNY), Err(MoneyError::NotPositive(0)));
        assert_eq!(Money::positive(-5, Currency::CNY), Err(MoneyError::NotPositive(-5)));
        assert_eq!(Money::positive(1, Currency::CNY).unwrap().minor_units(), 1);
    }

    #[test]
    fn adding_needs_one_currency() {
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        assert!(Money::cny(1).checked_add(usd).is_err());
        assert_eq!(Money::cny(150).checked_add(Money::cny(50)).unwrap(), Money::cny(200));
        assert_eq!(Money::cny(i64::MAX).checked_add(Money::cny(1)), Err(MoneyError::Overflow));
    }

    #[test]
    fn displays_major_and_minor_units() {
        assert_eq!(Money::cny(123_456).to_string(), "1234.56 CNY");
        assert_eq!(Money::cny(-5).to_string(), "-0.05 CNY");
    }
}

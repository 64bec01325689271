//! The IMEI as the board must give it: exactly 15 decimal digits, the last
//! one the Luhn check digit of the first 14 (3GPP TS 23.003). Anything else
//! (digits inside other text, 14 or 16 digits, a wrong check digit) is not
//! an IMEI, and the identify step fails `imei`.

/// Why a text is not an IMEI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImeiError {
    #[error("IMEI \"{0}\" is not 15 decimal digits")]
    NotFifteenDigits(String),
    #[error("IMEI {0} fails the Luhn check: its last digit should be {1}")]
    CheckDigit(String, char),
}

/// `text` if it is an IMEI (see the module docs).
pub fn check(text: &str) -> Result<&str, ImeiError> {
    if text.len() != 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ImeiError::NotFifteenDigits(text.to_string()));
    }
    let (body, check) = text.split_at(14);
    let want = luhn_check_digit(body);
    if !check.starts_with(want) {
        return Err(ImeiError::CheckDigit(text.to_string(), want));
    }
    Ok(text)
}

/// Whether `text` is an IMEI.
pub fn is_valid(text: &str) -> bool {
    check(text).is_ok()
}

/// Luhn check digit of a string of decimal digits (non-digits count as 0).
pub fn luhn_check_digit(digits: &str) -> char {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0')) % 10;
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    char::from_digit((10 - sum % 10) % 10, 10).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_imei_passes_and_near_misses_do_not() {
        assert_eq!(check("352656100367872"), Ok("352656100367872"));
        assert_eq!(
            check("352656100367873"),
            Err(ImeiError::CheckDigit("352656100367873".into(), '2'))
        );
        for bad in [
            "35265610036787",
            "3526561003678720",
            "000000000000001",
            "imei=352656100367872",
            " 352656100367872",
            "35265610036787\u{1b}",
            "",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check("x").unwrap_err().to_string(),
            "IMEI \"x\" is not 15 decimal digits"
        );
    }
}

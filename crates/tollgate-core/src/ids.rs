//! Public identifiers: a type prefix and base62 randomness (`msg_01…`, `req_01…`), in the
//! style of the Anthropic API. The caller supplies the random bytes.

/// Base62 digits, in ASCII order so encoded strings of equal length sort like their numbers.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Big-endian base62 of `bytes`, without leading zero digits ("0" for all zeros).
pub fn base62_encode(bytes: &[u8]) -> String {
    match <[u8; 16]>::try_from(bytes) {
        Ok(sixteen) => base62_of_u128(u128::from_be_bytes(sixteen)),
        Err(_) => base62_by_long_division(bytes),
    }
}

/// Base62 of a 128-bit number (the sixteen bytes of every id) in machine arithmetic, ten
/// digits per 64-bit chunk: a request makes several ids, and the long division byte by
/// byte was a measurable share of its time.
fn base62_of_u128(mut number: u128) -> String {
    const CHUNK_DIGITS: usize = 10;
    const CHUNK: u128 = 62_u128.pow(10);
    let mut digits = [b'0'; 30];
    let mut start = digits.len();
    loop {
        let mut chunk = u64::try_from(number % CHUNK).unwrap_or_default();
        number /= CHUNK;
        let more = number > 0;
        let mut written = 0;
        while (more && written < CHUNK_DIGITS) || (!more && chunk > 0) {
            start -= 1;
            digits[start] = ALPHABET[(chunk % 62) as usize];
            chunk /= 62;
            written += 1;
        }
        if !more {
            break;
        }
    }
    if start == digits.len() {
        start -= 1;
    }
    String::from_utf8(digits[start..].to_vec()).unwrap_or_default()
}

/// Base62 of any number of bytes, by long division.
fn base62_by_long_division(bytes: &[u8]) -> String {
    let mut number: Vec<u8> = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&byte| byte != 0) {
        let mut remainder: u32 = 0;
        for byte in number.iter_mut() {
            let accumulator = (remainder << 8) | u32::from(*byte);
            *byte = (accumulator / 62) as u8;
            remainder = accumulator % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Kinds of public id, each with its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Organization,
    Workspace,
    ApiKey,
    Lot,
    Reservation,
    Message,
    Request,
    User,
    Purchase,
    Invite,
    MessageBatch,
    AlertDestination,
    AlertEvent,
    File,
    ServiceAccount,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Organization => "org_",
            IdKind::Workspace => "wrkspc_",
            IdKind::ApiKey => "apikey_",
            IdKind::Lot => "lot_",
            IdKind::Reservation => "rsv_",
            IdKind::Message => "msg_",
            IdKind::Request => "req_",
            IdKind::User => "user_",
            IdKind::Purchase => "purch_",
            IdKind::Invite => "invite_",
            IdKind::MessageBatch => "msgbatch_",
            IdKind::AlertDestination => "alertdest_",
            IdKind::AlertEvent => "alertevt_",
            IdKind::File => "file_",
            IdKind::ServiceAccount => "svac_",
        }
    }
}

/// `prefix` + "01" + 22 base62 characters from 16 random bytes (as Anthropic's ids look).
pub fn new_id(kind: IdKind, random: [u8; 16]) -> String {
    let encoded = base62_encode(&random);
    format!("{}01{encoded:0>22}", kind.prefix())
}

/// Like [`new_id`], but the 16 bytes are the creation time in milliseconds since the Unix
/// epoch (six bytes, big-endian) followed by ten random ones. Ids of one kind made this way
/// sort in the order they were made, to the millisecond, so a row keyed by one lands at the
/// right edge of its index instead of on a random page; they still carry 80 random bits.
/// For rows written on every request (reservations, request ids), never for secrets.
pub fn new_time_ordered_id(kind: IdKind, unix_millis: u64, random: [u8; 10]) -> String {
    let mut bytes = [0_u8; 16];
    bytes[..6].copy_from_slice(&unix_millis.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&random);
    new_id(kind, bytes)
}

/// Whether `text` has the shape of an id of `kind` (checked before any lookup).
pub fn is_well_formed(kind: IdKind, text: &str) -> bool {
    text.strip_prefix(kind.prefix()).is_some_and(|rest| {
        (1..=64).contains(&rest.len()) && rest.bytes().all(|byte| byte.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests;

//! Parser for the `nginx` format. (stub: being implemented)

use crate::malformed::Reason;
use crate::record::Record;

/// Parse one line; see the module docs of [`crate::parse`] for the contract.
pub fn parse<'a>(_line: &'a str, _rec: &mut Record<'a>) -> Result<(), Reason> {
    Err(Reason::BadSyntax)
}

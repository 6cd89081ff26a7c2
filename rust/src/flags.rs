//! Envoy response flags as a bit set (`%RESPONSE_FLAGS%`, e.g. `UF,URX`).

/// Short names in bit order. The index of a name is its bit.
pub const FLAG_NAMES: [&str; 30] = [
    "UH", "UF", "UO", "NR", "URX", "UT", "LR", "UR", "UC", "DC", "DI", "FI", "RL", "UAEX", "RLSE",
    "SI", "DPE", "UPE", "UMSDR", "IH", "NC", "DT", "OM", "DF", "DO", "DR", "UDO", "UPF", "NFCF",
    "LH",
];

/// Number of distinct flags tracked.
pub const NUM_FLAGS: usize = FLAG_NAMES.len();

/// A set of response flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u32);

impl Flags {
    pub const NONE: Flags = Flags(0);

    /// Bit for one flag name, `None` if unknown.
    #[inline]
    pub fn bit(name: &[u8]) -> Option<u32> {
        FLAG_NAMES
            .iter()
            .position(|n| n.as_bytes() == name)
            .map(|i| 1u32 << i)
    }

    /// Parse Envoy's comma-separated list; `-` or empty is no flag. Unknown names are
    /// ignored (Envoy adds flags over time; an unknown flag must not reject the line).
    #[inline]
    pub fn parse(s: &[u8]) -> Flags {
        if s.is_empty() || s == b"-" {
            return Flags::NONE;
        }
        let mut bits = 0u32;
        for part in s.split(|&b| b == b',') {
            if let Some(b) = Flags::bit(part.trim_ascii()) {
                bits |= b;
            }
        }
        Flags(bits)
    }

    #[inline]
    pub fn contains(self, name_bit: u32) -> bool {
        self.0 & name_bit != 0
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Names of the flags that are set, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        FLAG_NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_dash() {
        assert_eq!(Flags::parse(b"-"), Flags::NONE);
        let f = Flags::parse(b"UF,URX");
        assert_eq!(f.names().collect::<Vec<_>>(), vec!["UF", "URX"]);
        assert_eq!(
            Flags::parse(b"XYZ,DC").names().collect::<Vec<_>>(),
            vec!["DC"]
        );
    }
}

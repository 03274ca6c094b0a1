//! A stack-safe guard on field-table nesting, run before `amq-protocol` parses a payload.
//!
//! `amq-protocol` parses field tables and arrays recursively. A table nested a few hundred
//! levels deep fits in a few kilobytes yet overflows a 2 MiB thread stack, which aborts the whole
//! process: no `Result` can catch it. So before handing a payload that may hold a table to the
//! parser, this module walks the tables iteratively and refuses those nested deeper than
//! [`MAX_TABLE_DEPTH`].
//!
//! The walk mirrors `amq-protocol`'s grammar (RabbitMQ's type octets, §4.2.5.5 "Field Tables"
//! with RabbitMQ's errata). When the bytes are malformed it stops and lets the real parser report
//! the error: the parser reads in the same order, so it fails at the same place without having
//! gone deeper than the walk already checked.

/// Deepest nesting accepted, counting the outermost table as 1. Real clients nest two or three
/// levels (client properties → capabilities); 32 levels parse well within a 2 MiB stack in a
/// debug build.
pub const MAX_TABLE_DEPTH: usize = 32;

/// A field of a method's argument list, enough to skip to the field table it carries.
#[derive(Clone, Copy)]
enum Field {
    Octet,
    Short,
    ShortStr,
    Table,
}

/// The arguments that precede and include the field table of every 0-9-1 method that has one,
/// keyed by (class id, method id). Consecutive bits pack into one octet (§4.2.5.2).
fn table_layout(class_id: u16, method_id: u16) -> Option<&'static [Field]> {
    use Field::*;
    Some(match (class_id, method_id) {
        // connection.start: version-major, version-minor, server-properties
        (10, 10) => &[Octet, Octet, Table],
        // connection.start-ok: client-properties
        (10, 11) => &[Table],
        // exchange.declare: ticket, exchange, type, 5 bits, arguments
        (40, 10) => &[Short, ShortStr, ShortStr, Octet, Table],
        // exchange.bind / unbind: ticket, destination, source, routing-key, no-wait, arguments
        (40, 30) | (40, 40) => &[Short, ShortStr, ShortStr, ShortStr, Octet, Table],
        // queue.declare: ticket, queue, 5 bits, arguments
        (50, 10) => &[Short, ShortStr, Octet, Table],
        // queue.bind: ticket, queue, exchange, routing-key, no-wait, arguments
        (50, 20) => &[Short, ShortStr, ShortStr, ShortStr, Octet, Table],
        // queue.unbind: ticket, queue, exchange, routing-key, arguments (no bits)
        (50, 50) => &[Short, ShortStr, ShortStr, ShortStr, Table],
        // basic.consume: ticket, queue, consumer-tag, 4 bits, arguments
        (60, 20) => &[Short, ShortStr, ShortStr, Octet, Table],
        _ => return None,
    })
}

/// Checks the nesting of the field table in a method's arguments (the payload after the class
/// and method ids). Methods without a table always pass.
pub(crate) fn check_method(class_id: u16, method_id: u16, args: &[u8]) -> Result<(), usize> {
    let Some(layout) = table_layout(class_id, method_id) else {
        return Ok(());
    };
    let mut pos = 0usize;
    for field in layout {
        match field {
            Field::Octet => pos += 1,
            Field::Short => pos += 2,
            Field::ShortStr => match args.get(pos) {
                Some(&len) => pos += 1 + usize::from(len),
                None => return Ok(()),
            },
            Field::Table => return check_table_at(args, pos),
        }
    }
    Ok(())
}

/// Checks the `headers` property of a content header payload (class id, weight, body size,
/// property flags, then the properties in flag order: content-type, content-encoding, headers).
pub(crate) fn check_content_header(payload: &[u8]) -> Result<(), usize> {
    const FLAGS_AT: usize = 2 + 2 + 8;
    let Some(flags) = read_u16(payload, FLAGS_AT) else {
        return Ok(());
    };
    if flags & (1 << 13) == 0 {
        return Ok(());
    }
    let mut pos = FLAGS_AT + 2;
    for bit in [15u16, 14] {
        if flags & (1 << bit) != 0 {
            match payload.get(pos) {
                Some(&len) => pos += 1 + usize::from(len),
                None => return Ok(()),
            }
        }
    }
    check_table_at(payload, pos)
}

/// Checks a table given without its length prefix, as AMQPLAIN's SASL response is.
pub(crate) fn check_table_body(body: &[u8]) -> Result<(), usize> {
    walk(body, 0, body.len())
}

/// Checks the table whose 4-byte length prefix starts at `pos`.
fn check_table_at(buf: &[u8], pos: usize) -> Result<(), usize> {
    let Some(len) = read_u32(buf, pos) else {
        return Ok(());
    };
    let start = pos + 4;
    match start.checked_add(len as usize) {
        Some(end) if end <= buf.len() => walk(buf, start, end),
        _ => Ok(()),
    }
}

/// Walks the entries of a table spanning `start..end` with an explicit stack, returning
/// `Err(limit)` as soon as the nesting passes [`MAX_TABLE_DEPTH`].
fn walk(buf: &[u8], start: usize, end: usize) -> Result<(), usize> {
    // Each level: (end of its bytes, whether it is a table — entries have a key — or an array).
    let mut stack: Vec<(usize, bool)> = vec![(end, true)];
    let mut pos = start;
    while let Some(&(level_end, is_table)) = stack.last() {
        if pos >= level_end {
            stack.pop();
            continue;
        }
        if is_table {
            let Some(&key_len) = buf.get(pos) else {
                return Ok(());
            };
            pos += 1 + usize::from(key_len);
        }
        let Some(&tag) = buf.get(pos) else {
            return Ok(());
        };
        pos += 1;
        match tag {
            b'F' | b'A' => {
                let Some(len) = read_u32(buf, pos) else {
                    return Ok(());
                };
                pos += 4;
                let inner_end = pos.saturating_add(len as usize);
                if inner_end > level_end {
                    return Ok(());
                }
                if stack.len() >= MAX_TABLE_DEPTH {
                    return Err(MAX_TABLE_DEPTH);
                }
                stack.push((inner_end, tag == b'F'));
            }
            b'S' | b'x' => {
                let Some(len) = read_u32(buf, pos) else {
                    return Ok(());
                };
                pos = pos.saturating_add(4).saturating_add(len as usize);
            }
            other => match fixed_size(other) {
                Some(size) => pos += size,
                None => return Ok(()),
            },
        }
        if pos > level_end {
            return Ok(());
        }
    }
    Ok(())
}

/// Sizes of the fixed-width field value types, by RabbitMQ's type octets as `amq-protocol`
/// reads them ('s' is a short int there, 'l' and 'L' both 64-bit).
fn fixed_size(tag: u8) -> Option<usize> {
    Some(match tag {
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'L' | b'l' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        _ => return None,
    })
}

fn read_u16(buf: &[u8], pos: usize) -> Option<u16> {
    let bytes = buf.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn read_u32(buf: &[u8], pos: usize) -> Option<u32> {
    let bytes = buf.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A table holding `depth` levels: {k: {k: … {}}}, with its length prefix.
    pub(crate) fn nested_table(depth: usize) -> Vec<u8> {
        let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
        for _ in 1..depth {
            let mut entry = vec![1u8, b'k', b'F'];
            entry.extend_from_slice(&inner);
            let mut table = (entry.len() as u32).to_be_bytes().to_vec();
            table.extend(entry);
            inner = table;
        }
        inner
    }

    #[test]
    fn tables_at_the_depth_limit_pass() {
        assert_eq!(check_table_at(&nested_table(MAX_TABLE_DEPTH), 0), Ok(()));
    }

    #[test]
    fn tables_one_level_past_the_limit_are_refused() {
        assert_eq!(
            check_table_at(&nested_table(MAX_TABLE_DEPTH + 1), 0),
            Err(MAX_TABLE_DEPTH)
        );
    }

    #[test]
    fn arrays_count_towards_the_depth() {
        // {k: [[[…]]]} built from arrays instead of tables.
        let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
        for _ in 0..MAX_TABLE_DEPTH + 2 {
            let mut value = vec![b'A'];
            value.extend_from_slice(&inner);
            inner = (value.len() as u32).to_be_bytes().to_vec();
            inner.extend(value);
        }
        let mut table = vec![1u8, b'k', b'A'];
        table.extend_from_slice(&inner);
        let mut framed = (table.len() as u32).to_be_bytes().to_vec();
        framed.extend(table);
        assert_eq!(check_table_at(&framed, 0), Err(MAX_TABLE_DEPTH));
    }

    #[test]
    fn truncated_tables_are_left_to_the_parser() {
        let mut table = nested_table(4);
        table.truncate(table.len() - 3);
        assert_eq!(check_table_at(&table, 0), Ok(()));
    }

    #[test]
    fn queue_declare_arguments_are_located_after_the_name_and_bits() {
        let mut args = vec![0, 0, 3, b'a', b'b', b'c', 0b0000_0010];
        args.extend(nested_table(MAX_TABLE_DEPTH + 1));
        assert_eq!(check_method(50, 10, &args), Err(MAX_TABLE_DEPTH));
        assert_eq!(
            check_method(50, 11, &args),
            Ok(()),
            "declare-ok has no table"
        );
    }
}

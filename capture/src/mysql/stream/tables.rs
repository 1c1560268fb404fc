//! TABLE_MAP and ROWS events: the table a rows event changes, the shape its rows are
//! decoded with, and the change events they become.
//!
//! A table's shape comes from `information_schema` when the table is first met and again
//! after any DDL statement in the binlog. Each TABLE_MAP event is checked against it; the
//! check is skipped while the event's bytes are those of the last one checked. Where they
//! differ (the binlog is behind the catalog, as after a restart that resumes before an
//! ALTER), the shape at that position is rebuilt from the event itself when it carries
//! the columns' names (`binlog_row_metadata = FULL`, see the `binlog_shape` module), or
//! else taken from the one earlier shape of the table that agrees with its types. Where
//! none or several agree, the capture stops with an error naming the table and both
//! shapes, and how to go on.
//!
//! A ROWS event of a captured table becomes one change event per row of the open
//! transaction, or rows held in the state store when the transaction is an XA one (see
//! `xa`). A row of `tributary.echo`, which a Tributary sink writes first in each of its
//! transactions, names the writer as the transaction's origin instead. A rows event
//! outside a transaction, a partial JSON update, or a row that cannot be decoded stops
//! the capture with an error naming the table and the position.

use super::BinlogReader;
use crate::error::CaptureError;
use crate::mysql::binlog_shape::MapShape;
use crate::mysql::catalog::{self, connect, load_tables, MyTable};
use crate::mysql::rows::{RowLayout, RowPair};
use crate::state::HeldRow;
use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use tributary_schemas::{encode_value, ChangeEvent, Op, Position, TableId, TxMeta};

impl BinlogReader<'_> {
    /// A TABLE_MAP event (its body `raw`): maps the table number the next rows events use
    /// to the table, and checks a captured table's shape against the event.
    pub(super) async fn table_map(
        &mut self,
        tme: &TableMapEvent<'_>,
        raw: &[u8],
    ) -> Result<(), CaptureError> {
        let id = TableId::new(tme.database_name(), tme.table_name());
        if id.schema == "tributary" && id.name == "echo" {
            self.echo_table = Some(tme.clone().into_owned());
        }
        let captured = self.config.captures(&id.schema, &id.name);
        if captured {
            // The event's bytes after the table number: equal bytes, same shape.
            let signature = raw.get(8..).unwrap_or(raw);
            if self.shapes.get(&id).map(|(s, _)| s.as_slice()) != Some(signature) {
                let shape = self.shape_at(&id, tme, &self.at()).await?;
                let layout = RowLayout::new(&shape, &self.tables[&id]);
                self.shapes.insert(id.clone(), (signature.to_vec(), layout));
            }
        }
        self.table_ids
            .insert(tme.table_id(), captured.then_some(id));
        Ok(())
    }

    /// Makes `tables[id]` the shape that decodes the rows after TABLE_MAP event `tme` (at
    /// binlog position `at`): the catalog's when it agrees with the event, else the event's
    /// own (`binlog_row_metadata = FULL`), else an error saying what changed.
    async fn shape_at(
        &mut self,
        id: &TableId,
        tme: &TableMapEvent<'_>,
        at: &str,
    ) -> Result<MapShape, CaptureError> {
        let shape = MapShape::read(tme)
            .map_err(|m| CaptureError::Decode(format!("TABLE_MAP of {id} at {at}: {m}")))?;
        let mut conn = None;
        if !self.tables.contains_key(id) {
            let c = conn.insert(connect(self.config.url.expose()).await?);
            self.tables
                .extend(load_tables(c, self.config, self.store, self.source, Some(id)).await?);
        }
        let catalog = self.tables.get(id);
        if catalog.is_some_and(|t| shape.matches(t, self.collations.as_ref())) {
            return Ok(shape);
        }
        if !shape.named() {
            // Without names, a shape this table had before that agrees with the event (and
            // is the only one that does) is the shape at this position.
            let known = catalog::known_shapes(self.store, self.source, id)?;
            let mut agreeing = known.into_iter().filter(|t| shape.matches(t, None));
            if let (Some(table), None) = (agreeing.next(), agreeing.next()) {
                tracing::info!(
                    source = self.source,
                    table = %id,
                    at,
                    version = table.state.schema.version,
                    "decoding with an earlier shape of the table that agrees with the binlog (the catalog differs at this position)"
                );
                self.tables.insert(id.clone(), table);
                return Ok(shape);
            }
            return Err(unknown_shape(id, at, &shape, catalog));
        }
        let collations = match self.collations {
            Some(c) => c,
            None => {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(connect(self.config.url.expose()).await?),
                };
                self.collations.insert(catalog::collations(c).await?)
            }
        };
        let table = shape.table(id, catalog, collations, self.store, self.source)?;
        tracing::info!(
            source = self.source,
            table = %id,
            at,
            columns = %table.columns.iter().map(|c| format!("{} {}", c.name, c.column_type)).collect::<Vec<_>>().join(", "),
            "decoding with the table's shape from the binlog (the catalog differs at this position)"
        );
        self.tables.insert(id.clone(), table);
        Ok(shape)
    }

    /// A ROWS event: the changes of a captured table become events of the open
    /// transaction (held instead in an XA transaction); a `tributary.echo` row names the
    /// transaction's origin.
    pub(super) async fn rows(&mut self, rows: &RowsEventData<'_>) -> Result<(), CaptureError> {
        if let Some(echo) = self
            .echo_table
            .as_ref()
            .filter(|t| t.table_id() == rows.table_id())
        {
            if let Some(tx) = self.open.as_mut() {
                tx.origin = Some(echo_writer(rows, echo).unwrap_or_else(|| "tributary".into()));
            }
            return Ok(());
        }
        let Some(Some(id)) = self.table_ids.get(&rows.table_id()) else {
            return Ok(());
        };
        let table = &self.tables[id];
        let (file, pos) = (&self.file, self.pos);
        let tx = self.open.as_mut().ok_or_else(|| {
            CaptureError::Decode(format!(
                "rows event for {id} outside a transaction at {file}:{pos}"
            ))
        })?;
        let op = row_op(rows)?;
        let decoded = decode_rows(&self.shapes[id].1, table, rows, id, file, pos)?;
        // One event reused for the rows of this rows event: source and table
        // are copied once per rows event, not per row.
        let mut change = ChangeEvent {
            source: self.source.to_string(),
            table: id.clone(),
            schema_version: table.state.schema.version,
            op,
            key: Vec::new(),
            before: None,
            after: None,
            position: Position::mysql(tx.file_seq, tx.offset, tx.seq),
            tx: TxMeta {
                id: tx.id,
                commit_ts_micros: tx.commit_ts_micros,
                first: Position::mysql(tx.file_seq, tx.offset, 1),
            },
            origin: tx.origin.clone(),
        };
        for (before, after) in decoded {
            change.key = match (&after, &before) {
                (Some(a), _) => table.key(a),
                (None, Some(b)) => table.key(b),
                (None, None) => continue,
            };
            tx.seq += 1;
            change.before = before;
            change.after = after;
            change.position = Position::mysql(tx.file_seq, tx.offset, tx.seq);
            match &tx.xa {
                None => self.publisher.event(&table.state.avro, &change).await?,
                Some((xid, run)) => {
                    let row = HeldRow {
                        table: id.clone(),
                        version: table.state.schema.version,
                        value: encode_value(&table.state.avro, &change)?,
                    };
                    self.store.xa_hold(self.source, xid, *run, tx.seq, &row)?;
                }
            }
        }
        Ok(())
    }
}

/// The operation of rows event `rows`.
fn row_op(rows: &RowsEventData<'_>) -> Result<Op, CaptureError> {
    Ok(match rows {
        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
        RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => Op::Update,
        RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
        RowsEventData::PartialUpdateRowsEvent(_) => {
            return Err(CaptureError::Setup(
                "partial JSON updates in the binlog: set binlog_row_value_options = '' on the \
                 server"
                    .into(),
            ))
        }
    })
}

/// Decodes rows event `rows` of captured table `id` (at `file`:`pos`) with `layout`.
///
/// One rows event is small (binlog_row_event_max_size), so decoding it whole is bounded.
/// mysql_common 0.37 panics (overflow) on a negative TIME(1)/TIME(2) value with a
/// fraction; that becomes an error naming the table instead of a crash (release builds
/// keep overflow checks for mysql_common, so it never turns into a wrong value).
fn decode_rows(
    layout: &RowLayout,
    table: &MyTable,
    rows: &RowsEventData<'_>,
    id: &TableId,
    file: &str,
    pos: u64,
) -> Result<Vec<RowPair>, CaptureError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| layout.decode(table, rows)))
        .map_err(|_| {
            CaptureError::Decode(format!(
                "rows event for {id} at {file}:{pos} cannot be decoded by mysql_common \
                 (a negative TIME(1) or TIME(2) value with a fraction is a known cause)"
            ))
        })?
        .map_err(|m| CaptureError::Decode(format!("rows event for {id} at {file}:{pos}: {m}")))
}

/// The writer a `tributary.echo` rows event names (the first column of its first row's
/// after image).
fn echo_writer(rows: &RowsEventData<'_>, echo: &TableMapEvent<'_>) -> Option<String> {
    let (_, after) = rows.rows(echo).next()?.ok()?;
    match after?.as_ref(0)? {
        mysql_async::binlog::value::BinlogValue::Value(mysql_async::Value::Bytes(b)) => {
            String::from_utf8(b.clone()).ok()
        }
        _ => None,
    }
}

/// The error when rows of table `id` at `at` come with a TABLE_MAP `shape` without names
/// that neither the catalog's shape (`catalog`, if the table is still there) nor exactly
/// one earlier shape of the table agrees with.
fn unknown_shape(
    id: &TableId,
    at: &str,
    shape: &MapShape,
    catalog: Option<&MyTable>,
) -> CaptureError {
    let full = "set binlog_row_metadata = FULL on the server so the binlog carries each \
                table's shape, or take a new snapshot (remove this source's state)";
    match catalog {
        None => CaptureError::Setup(format!(
            "table {id} has rows in the binlog at {at} but is no longer in the catalog \
             (dropped or renamed since), so its shape at that position is unknown: {full}; \
             to go on without those rows, add exclude = [\"{id}\"] to the source"
        )),
        Some(t) => CaptureError::Decode(format!(
            "table {id}: the binlog row at {at} has {} columns of types ({}), the table \
             has ({}) now, and not exactly one earlier shape of it agrees; its shape \
             changed since this position: {full}",
            shape.columns.len(),
            shape
                .columns
                .iter()
                .map(|c| format!("{:?}", c.ty)
                    .trim_start_matches("MYSQL_TYPE_")
                    .to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
            t.columns
                .iter()
                .map(|c| c.column_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

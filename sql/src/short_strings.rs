//! A physical optimizer rule: a filter's `column = 'literal'`, `<>` and `IN (…)` over a
//! string-view column (or any string-view expression), with literals of at most 12
//! bytes, compare the 16-byte views with the literals' as whole numbers.
//!
//! A string of at most 12 bytes lives inside its view (length, then the bytes, then
//! zeros), so a value equals such a literal exactly when its view equals the literal's:
//! a longer value's view has another length. Arrow's comparison takes that shortcut only
//! when neither array has data buffers, and a column decoded from a Parquet dictionary
//! always carries the dictionary's buffer, so `WHERE label = 'cat'` went through the
//! general per-row path (length, prefix, then bytes: 37% of the worker time of
//! bench-sql's `in_or`). Labels, splits, formats and tag values, the strings users filter
//! on, are short.
//!
//! Only local plans are rewritten: a cluster's scheduler plans with Ballista's session,
//! which does not have this rule, so nothing here needs to cross the wire.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::builder::make_view;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

/// The longest string a view holds inline.
const MAX_INLINE: usize = 12;

/// Up to this many literals a row's view is compared with each; above, the sorted
/// literals are binary-searched (an `IN` list of hundreds of labels would otherwise cost
/// hundreds of comparisons a row).
const LINEAR_LOOKUP: usize = 8;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct CompareShortStringViews;

impl PhysicalOptimizerRule for CompareShortStringViews {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else { return Ok(Transformed::no(node)) };
            let schema = filter.input().schema();
            let predicate = filter.predicate().clone().transform_up(|expr| Ok(rewrite(expr, &schema)))?;
            if !predicate.transformed {
                return Ok(Transformed::no(node));
            }
            let rebuilt = FilterExecBuilder::from(filter).with_predicate(predicate.data).build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "slicetest_compare_short_string_views"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expr` as a [`ShortStringViewsIn`] when it is a comparison this rule handles.
fn rewrite(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Transformed<Arc<dyn PhysicalExpr>> {
    let replacement = if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let negated = match binary.op() {
            Operator::Eq => false,
            Operator::NotEq => true,
            _ => return Transformed::no(expr),
        };
        // Either side may be the literal.
        let (strings, view) = match (inline_view(binary.left()), inline_view(binary.right())) {
            (None, Some(view)) => (binary.left(), view),
            (Some(view), None) => (binary.right(), view),
            _ => return Transformed::no(expr),
        };
        is_string_view(strings, schema).then(|| ShortStringViewsIn::new(strings.clone(), vec![view], negated))
    } else if let Some(in_list) = expr.downcast_ref::<InListExpr>() {
        let views: Option<Vec<u128>> = in_list.list().iter().map(inline_view).collect();
        views
            .filter(|_| is_string_view(in_list.expr(), schema))
            .map(|views| ShortStringViewsIn::new(in_list.expr().clone(), views, in_list.negated()))
    } else {
        None
    };
    match replacement {
        Some(replacement) => Transformed::yes(Arc::new(replacement)),
        None => Transformed::no(expr),
    }
}

/// Whether `expr` gives a string-view column.
fn is_string_view(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    expr.data_type(schema).is_ok_and(|t| t == DataType::Utf8View)
}

/// The view of a non-NULL string literal of at most 12 bytes.
fn inline_view(expr: &Arc<dyn PhysicalExpr>) -> Option<u128> {
    let literal = expr.downcast_ref::<Literal>()?;
    match literal.value() {
        ScalarValue::Utf8View(Some(s)) | ScalarValue::Utf8(Some(s)) if s.len() <= MAX_INLINE => {
            Some(make_view(s.as_bytes(), 0, 0))
        }
        _ => None,
    }
}

/// `strings IN (literals)` (or `NOT IN`, or `=` / `<>` with one) for literals of at most
/// 12 bytes, by their views; NULL where `strings` is NULL, as in SQL.
#[derive(Debug, Eq)]
pub struct ShortStringViewsIn {
    /// The expression giving the strings (a column, usually): a child, so that plan
    /// rewrites that renumber columns see it.
    strings: Arc<dyn PhysicalExpr>,
    /// The literals' views, sorted and without repeats.
    views: Vec<u128>,
    negated: bool,
}

impl ShortStringViewsIn {
    /// `strings IN (the literals of views)`, or NOT IN when `negated`.
    fn new(strings: Arc<dyn PhysicalExpr>, mut views: Vec<u128>, negated: bool) -> Self {
        views.sort_unstable();
        views.dedup();
        ShortStringViewsIn { strings, views, negated }
    }
}

impl PartialEq for ShortStringViewsIn {
    fn eq(&self, other: &Self) -> bool {
        self.strings.eq(&other.strings) && self.views == other.views && self.negated == other.negated
    }
}

impl Hash for ShortStringViewsIn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.strings.hash(state);
        self.views.hash(state);
        self.negated.hash(state);
    }
}

impl fmt::Display for ShortStringViewsIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: Vec<String> = self.views.iter().map(|v| format!("{:?}", inline_str(*v))).collect();
        let not = if self.negated { "NOT " } else { "" };
        write!(f, "{} {not}IN short views ({})", self.strings, values.join(", "))
    }
}

/// The string an inline view holds (for display).
fn inline_str(view: u128) -> String {
    let len = (view as u32) as usize;
    String::from_utf8_lossy(&view.to_le_bytes()[4..4 + len.min(MAX_INLINE)]).into_owned()
}

impl PhysicalExpr for ShortStringViewsIn {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.strings.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.strings.evaluate(batch)?.into_array(batch.num_rows())?;
        let Some(strings) = array.as_string_view_opt() else {
            return exec_err!("{self}: expected a Utf8View column, got {}", array.data_type());
        };
        let views = strings.views();
        let values = match self.views.as_slice() {
            [one] => BooleanBuffer::collect_bool(views.len(), |i| (views[i] == *one) != self.negated),
            few if few.len() <= LINEAR_LOOKUP => {
                BooleanBuffer::collect_bool(views.len(), |i| few.contains(&views[i]) != self.negated)
            }
            many => BooleanBuffer::collect_bool(views.len(), |i| many.binary_search(&views[i]).is_ok() != self.negated),
        };
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(values, strings.nulls().cloned()))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.strings]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let Ok([strings]) = <[_; 1]>::try_from(children) else {
            return exec_err!("{self}: expected one child");
        };
        Ok(Arc::new(ShortStringViewsIn { strings, views: self.views.clone(), negated: self.negated }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{RecordBatch, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::CompareShortStringViews;

    fn context(with_rule: bool) -> SessionContext {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(CompareShortStringViews));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        // Inline and long values, one sharing a 12-byte literal's first bytes, the empty
        // string, NULL; two batches, one with a data buffer (long values) and one without.
        let with_buffer = StringViewArray::from(vec![
            Some("cat"),
            Some("dog"),
            Some("cat and a long tail"),
            Some("twelve bytes"),
            Some("twelve bytes and more"),
            None,
            Some(""),
        ]);
        let inline_only = StringViewArray::from(vec![Some("dog"), None, Some("cat"), Some("bird")]);
        let batches = [with_buffer, inline_only]
            .map(|a| RecordBatch::try_new(schema.clone(), vec![Arc::new(a)]).unwrap())
            .to_vec();
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![batches]).unwrap())).unwrap();
        ctx
    }

    proptest::proptest! {
        /// The view comparison agrees with Arrow's `eq` / `neq` on any strings (short,
        /// long, sharing prefixes, NULL) against any literal of at most 12 bytes.
        #[test]
        fn views_agree_with_arrows_comparison(
            values in proptest::collection::vec(proptest::option::of("[ab]{0,16}"), 0..200),
            literal in "[ab]{0,12}",
            negated in proptest::bool::ANY,
        ) {
            use datafusion::arrow::array::{Array, AsArray, Scalar};
            use datafusion::arrow::compute::kernels::cmp;
            use datafusion::physical_expr::PhysicalExpr;
            use datafusion::physical_expr::expressions::Column;
            let array = StringViewArray::from(values.iter().map(Option::as_deref).collect::<Vec<_>>());
            let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
            let batch = RecordBatch::try_new(schema, vec![Arc::new(array.clone())]).unwrap();
            let expr = super::ShortStringViewsIn::new(
                Arc::new(Column::new("s", 0)),
                vec![datafusion::arrow::array::builder::make_view(literal.as_bytes(), 0, 0)],
                negated,
            );
            let ours = expr.evaluate(&batch).unwrap().into_array(batch.num_rows()).unwrap();
            let scalar = Scalar::new(StringViewArray::from(vec![literal.as_str()]));
            let arrows = if negated { cmp::neq(&array, &scalar) } else { cmp::eq(&array, &scalar) }.unwrap();
            proptest::prop_assert_eq!(ours.as_boolean(), &arrows);
            proptest::prop_assert_eq!(ours.null_count(), array.null_count());
        }

        /// An IN list (compared one by one, or binary-searched past eight literals) gives
        /// membership in the literals, NULL for a NULL value.
        #[test]
        fn in_lists_are_membership(
            values in proptest::collection::vec(proptest::option::of("[ab]{0,14}"), 0..200),
            literals in proptest::collection::vec("[ab]{0,12}", 1..30),
            negated in proptest::bool::ANY,
        ) {
            use datafusion::arrow::array::AsArray;
            use datafusion::physical_expr::PhysicalExpr;
            use datafusion::physical_expr::expressions::Column;
            let array = StringViewArray::from(values.iter().map(Option::as_deref).collect::<Vec<_>>());
            let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
            let batch = RecordBatch::try_new(schema, vec![Arc::new(array)]).unwrap();
            let views = literals.iter().map(|l| datafusion::arrow::array::builder::make_view(l.as_bytes(), 0, 0)).collect();
            let expr = super::ShortStringViewsIn::new(Arc::new(Column::new("s", 0)), views, negated);
            let ours = expr.evaluate(&batch).unwrap().into_array(batch.num_rows()).unwrap();
            let expected: Vec<Option<bool>> =
                values.iter().map(|v| v.as_ref().map(|v| literals.contains(v) != negated)).collect();
            proptest::prop_assert_eq!(ours.as_boolean().iter().collect::<Vec<_>>(), expected);
        }
    }

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = datafusion::physical_plan::displayable(df.clone().create_physical_plan().await.unwrap().as_ref())
            .indent(false)
            .to_string();
        (pretty_format_batches(&df.collect().await.unwrap()).unwrap().to_string(), plan)
    }

    #[tokio::test]
    async fn short_literals_compare_views_with_the_same_results() {
        let (with, without) = (context(true), context(false));
        for sql in [
            "SELECT s, s = 'cat' AS c FROM t WHERE s = 'cat' OR s = 'twelve bytes' OR 'dog' = s",
            "SELECT count(*) FROM t WHERE s <> 'cat'",
            "SELECT s FROM t WHERE s = ''",
            "SELECT s FROM t WHERE s IN ('bird', 'dog', 'twelve bytes', 'x', 'y') ORDER BY s",
            "SELECT s FROM t WHERE s NOT IN ('bird', 'dog', 'twelve bytes', 'x', 'y') ORDER BY s",
            "SELECT count(*) FROM t WHERE (s = 'cat') IS NULL",
            "SELECT s FROM t WHERE lower(s) = 'dog' ORDER BY s",
            "SELECT s FROM t WHERE s IN ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'dog', 'twelve bytes', '') ORDER BY s",
            "SELECT s FROM t WHERE s NOT IN ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'dog', 'twelve bytes') ORDER BY s",
        ] {
            let ((ours, plan), (theirs, _)) = (run(&with, sql).await, run(&without, sql).await);
            assert_eq!(ours, theirs, "{sql}");
            assert!(plan.contains("IN short views"), "{sql}: not rewritten:\n{plan}");
        }
        // Left alone: a literal longer than 12 bytes (also among an IN list's), an ordering
        // comparison.
        for sql in [
            "SELECT s FROM t WHERE s = 'cat and a long tail'",
            "SELECT s FROM t WHERE s < 'cat' ORDER BY s",
            "SELECT s FROM t WHERE s IN ('cat', 'dog', 'bird', 'x', 'cat and a long tail') ORDER BY s",
        ] {
            let ((ours, plan), (theirs, _)) = (run(&with, sql).await, run(&without, sql).await);
            assert_eq!(ours, theirs, "{sql}");
            assert!(!plan.contains("IN short views"), "{sql}: rewritten:\n{plan}");
        }
    }
}

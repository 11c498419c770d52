//! A bound on what one call of a function can make. DataFusion's memory pool counts what
//! operators hold (sorts, joins, aggregates, recursive queries), not the arrays a scalar
//! function returns; and most functions return about what they are given. A few can
//! return far more: `repeat('x', 2000000000)` is one short line that allocates 2 GB at
//! once, inside one batch, where neither the pool nor a query's time limit can stop it
//! (and a literal one is even evaluated while the query is planned). Those functions are
//! wrapped here: before the call, the bytes it would make are worked out from its
//! arguments, and a call over [`MAX_FUNCTION_OUTPUT_BYTES`] fails with
//! `ResourcesExhausted` instead of running. Everything else about them (types, names,
//! simplification, documentation) is the wrapped function's.
//!
//! Functions that return about the sum of their arguments (`concat`, `concat_ws`,
//! `array_concat`, and the `||` operator) are bounded too: each one doubles at most, but
//! `WITH a AS (SELECT s || s AS s FROM …), b AS (SELECT s || s AS s FROM a) …` doubles
//! once per line. The `||` operator is not a function in DataFusion, so the analyzer rule
//! [`BoundStringConcat`] plans it as one (`string_concat`, the same kernel, names kept),
//! and gives the bounded copies to calls planned with DataFusion's own instances (a list
//! `||` is `array_concat`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The most bytes one call of a function (one batch of rows) may make: far above what a
/// query over image metadata needs, far below what would hurt a server.
pub const MAX_FUNCTION_OUTPUT_BYTES: u64 = 64 << 20;

/// How many bytes a call of a function would make, from its arguments, at most.
type Estimate = fn(&[ColumnarValue], usize) -> Result<u64>;

/// The functions whose result can be much larger than their arguments, or as large as
/// all of them together, with how large.
const BOUNDED: [(&str, Estimate); 12] = [
    ("repeat", repeat_bytes),
    ("lpad", pad_bytes),
    ("rpad", pad_bytes),
    ("replace", replace_bytes),
    ("regexp_replace", regexp_replace_bytes),
    ("array_repeat", array_repeat_bytes),
    ("array_resize", array_resize_bytes),
    ("range", range_bytes),
    ("concat", sum_bytes),
    ("concat_ws", concat_ws_bytes),
    ("array_concat", sum_bytes),
    (STRING_CONCAT, sum_bytes),
];

/// Replaces the functions of `ctx` that can make far more than they are given with ones
/// that refuse a call over [`MAX_FUNCTION_OUTPUT_BYTES`] (`generate_series` is `range`
/// with its end included: the same bound serves both).
pub fn bound_function_outputs(ctx: &SessionContext) {
    let state = ctx.state();
    for function in state.scalar_functions().values() {
        if let Some(bounded) = bounded(function) {
            ctx.register_udf(bounded);
        }
    }
    for function in operator_functions() {
        ctx.register_udf(function);
    }
    if !state.analyzer().rules.iter().any(|r| r.name() == BoundStringConcat::NAME) {
        ctx.add_analyzer_rule(Arc::new(BoundStringConcat::default()));
    }
}

/// The functions [`BoundStringConcat`] plans operators as, bounded: for a registry that
/// must know them by name (a cluster's scheduler and executors).
pub fn operator_functions() -> Vec<ScalarUDF> {
    let plain = ScalarUDF::from(StringConcatFunction::default());
    vec![bounded(&plain).expect("string_concat is bounded")]
}

/// `function` with its output bounded, when it is one of the functions that can make far
/// more than they are given (for a registry other than a [`SessionContext`]'s: a cluster
/// executor's).
pub fn bounded(function: &ScalarUDF) -> Option<ScalarUDF> {
    let inner = function.inner();
    if inner.downcast_ref::<BoundedOutput>().is_some() {
        return None;
    }
    let mut all = BOUNDED.into_iter().chain([("generate_series", range_bytes as Estimate)]);
    let (_, estimate) = all.find(|(name, _)| *name == function.name())?;
    Some(ScalarUDF::new_from_impl(BoundedOutput { inner: inner.clone().into(), estimate }))
}

/// A function whose calls are refused when they would make too much.
#[derive(Debug)]
struct BoundedOutput {
    inner: datafusion::logical_expr::udf_eq::UdfEq<Arc<dyn ScalarUDFImpl>>,
    estimate: Estimate,
}

// The estimate follows from the wrapped function (one per name), so it is the identity.
impl PartialEq for BoundedOutput {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for BoundedOutput {}

impl std::hash::Hash for BoundedOutput {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

#[warn(clippy::missing_trait_methods)] // Delegates everything but the call.
impl ScalarUDFImpl for BoundedOutput {
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = (self.estimate)(&args.args, args.number_rows)?;
        if bytes > MAX_FUNCTION_OUTPUT_BYTES {
            let call = match self.inner.name() {
                STRING_CONCAT => "… || …".to_string(),
                name => format!("{name}(…)"),
            };
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{call} would make about {} MiB in one call ({} rows), more than the {} MiB one call may make; \
                 ask for less (shorter strings, fewer elements) or filter the rows first",
                bytes >> 20,
                args.number_rows,
                MAX_FUNCTION_OUTPUT_BYTES >> 20
            )));
        }
        self.inner.invoke_with_args(args)
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn datafusion::common::ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    /// The wrapped function's, with the calls it plans bounded in turn: DataFusion's
    /// simplifications build calls from its own instances (`concat_ws` with a literal
    /// separator becomes another `concat_ws`).
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        use datafusion::common::tree_node::TreeNode;
        Ok(match self.inner.simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => {
                ExprSimplifyResult::Simplified(expr.transform_up(|e| bound_call(e, None))?.data)
            }
            original => original,
        })
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<datafusion::logical_expr::preimage::PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(&self, args: &'a [Expr]) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(&self, interval: &Interval, inputs: &[&Interval]) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<datafusion::logical_expr::StructFieldMapping> {
        self.inner.struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }
}

/// Argument `i` as one array of `rows` values (a scalar repeated), or None when absent.
fn column(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Option<ArrayRef>> {
    args.get(i).map(|a| a.to_array(rows.max(1))).transpose()
}

/// The byte length of each string of argument `i` (0 for NULL), or of each value's
/// memory for other types.
fn byte_lengths(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Vec<u64>> {
    let Some(array) = column(args, i, rows)? else { return Ok(vec![0; rows]) };
    let lengths = |len: &dyn Fn(usize) -> usize| -> Vec<u64> {
        (0..array.len()).map(|r| if array.is_null(r) { 0 } else { len(r) as u64 }).collect()
    };
    Ok(match array.data_type() {
        DataType::Utf8 => lengths(&|r| array.as_string::<i32>().value(r).len()),
        DataType::LargeUtf8 => lengths(&|r| array.as_string::<i64>().value(r).len()),
        DataType::Utf8View => lengths(&|r| array.as_string_view().value(r).len()),
        _ => {
            let each = (array.get_array_memory_size() / array.len().max(1)) as u64;
            vec![each.max(8); array.len()]
        }
    })
}

/// Argument `i` as whole numbers (NULL and negative as 0).
fn counts(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Vec<u64>> {
    let Some(array) = column(args, i, rows)? else { return Ok(vec![0; rows]) };
    let numbers = cast(&array, &DataType::Int64)?;
    let numbers = numbers.as_primitive::<Int64Type>();
    Ok((0..numbers.len()).map(|r| if numbers.is_null(r) { 0 } else { numbers.value(r).max(0) as u64 }).collect())
}

/// Whether each string of argument `i` is ASCII (true when absent).
fn ascii(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Vec<bool>> {
    let Some(array) = column(args, i, rows)? else { return Ok(vec![true; rows]) };
    let array = cast(&array, &DataType::Utf8)?;
    let strings = array.as_string::<i32>();
    Ok((0..strings.len()).map(|r| strings.is_null(r) || strings.value(r).is_ascii()).collect())
}

fn total(rows: impl Iterator<Item = u64>) -> u64 {
    rows.fold(0u64, u64::saturating_add)
}

/// The bytes of an argument's values over `rows` rows, without copying anything: these
/// functions are common (`||` above all), so the bound must cost next to nothing.
fn value_bytes(arg: &ColumnarValue, rows: usize) -> u64 {
    use datafusion::arrow::array::OffsetSizeTrait;
    fn offsets<O: OffsetSizeTrait>(o: &[O]) -> u64 {
        o.last().zip(o.first()).map_or(0, |(last, first)| (last.as_usize() - first.as_usize()) as u64)
    }
    let views = |views: &[u128]| views.iter().map(|v| *v as u32 as u64).sum::<u64>();
    match arg {
        ColumnarValue::Scalar(value) => {
            let one = match value {
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                    s.len()
                }
                ScalarValue::Binary(Some(b)) | ScalarValue::LargeBinary(Some(b)) | ScalarValue::BinaryView(Some(b)) => {
                    b.len()
                }
                v if v.is_null() => 0,
                v => v.size(),
            };
            (one as u64).saturating_mul(rows as u64)
        }
        ColumnarValue::Array(array) => match array.data_type() {
            DataType::Utf8 => offsets(array.as_string::<i32>().value_offsets()),
            DataType::LargeUtf8 => offsets(array.as_string::<i64>().value_offsets()),
            DataType::Binary => offsets(array.as_binary::<i32>().value_offsets()),
            DataType::LargeBinary => offsets(array.as_binary::<i64>().value_offsets()),
            DataType::Utf8View => views(array.as_string_view().views()),
            DataType::BinaryView => views(array.as_binary_view().views()),
            _ => array.to_data().get_slice_memory_size().unwrap_or_else(|_| array.get_array_memory_size()) as u64,
        },
    }
}

/// The arguments together: `concat(a, b, …)`, `array_concat`, `a || b`.
fn sum_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    Ok(args.iter().map(|a| value_bytes(a, rows)).fold(0u64, u64::saturating_add))
}

/// `concat_ws(separator, a, b, …)`: the arguments and a separator between each two.
fn concat_ws_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let Some((separator, values)) = args.split_first() else { return Ok(0) };
    let separators = value_bytes(separator, rows).saturating_mul(values.len().saturating_sub(1) as u64);
    Ok(sum_bytes(values, rows)?.saturating_add(separators))
}

/// `repeat(s, n)`: n copies of s.
fn repeat_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let (s, n) = (byte_lengths(args, 0, rows)?, counts(args, 1, rows)?);
    Ok(total(s.iter().zip(&n).map(|(s, n)| s.saturating_mul(*n))))
}

/// `lpad(s, n [, fill])`, `rpad`: n characters, of up to 4 bytes unless the fill is ASCII
/// (then what is left of s, at most its own bytes, plus the fill).
fn pad_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let (s, n, fill_ascii) = (byte_lengths(args, 0, rows)?, counts(args, 1, rows)?, ascii(args, 2, rows)?);
    Ok(total(
        (s.iter().zip(&n).zip(&fill_ascii)).map(|((s, n), ascii)| n.saturating_mul(if *ascii { 1 } else { 4 }) + s),
    ))
}

/// `replace(s, from, to)`: at most len(s) / len(from) replacements.
fn replace_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let (s, from, to) = (byte_lengths(args, 0, rows)?, byte_lengths(args, 1, rows)?, byte_lengths(args, 2, rows)?);
    Ok(total((0..s.len()).map(|r| match from[r] {
        0 => s[r],
        from => s[r].saturating_add((s[r] / from).saturating_mul(to[r])),
    })))
}

/// `regexp_replace(s, pattern, replacement [, flags])`: one match, or with flag `g` up to
/// one per position (a pattern may match the empty string); each match becomes the
/// replacement, whose group references (`\1`, `$1`) are each at most s.
fn regexp_replace_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let s = byte_lengths(args, 0, rows)?;
    let Some(replacement) = column(args, 2, rows)? else { return Ok(total(s.into_iter())) };
    let replacement = cast(&replacement, &DataType::Utf8)?;
    let replacement = replacement.as_string::<i32>();
    let global = match column(args, 3, rows)? {
        Some(flags) => {
            let flags = cast(&flags, &DataType::Utf8)?;
            let flags = flags.as_string::<i32>();
            (0..flags.len()).map(|r| !flags.is_null(r) && flags.value(r).contains('g')).collect()
        }
        None => vec![false; s.len()],
    };
    Ok(total((0..s.len()).map(|r| {
        let text = if replacement.is_null(r) { "" } else { replacement.value(r) };
        let references = text.as_bytes().windows(2).filter(|w| matches!(w[0], b'\\' | b'$') && w[1] != w[0]).count();
        let each = (text.len() as u64).saturating_add((references as u64).saturating_mul(s[r]));
        let matches = if global[r] { s[r] + 1 } else { 1 };
        s[r].saturating_add(matches.saturating_mul(each))
    })))
}

/// `array_repeat(element, n)`: n elements.
fn array_repeat_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let (element, n) = (byte_lengths(args, 0, rows)?, counts(args, 1, rows)?);
    Ok(total(element.iter().zip(&n).map(|(e, n)| n.saturating_mul((*e).max(8)))))
}

/// `array_resize(array, n [, fill])`: n elements.
fn array_resize_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let (n, fill) = (counts(args, 1, rows)?, byte_lengths(args, 2, rows)?);
    Ok(total(n.iter().zip(&fill).map(|(n, f)| n.saturating_mul((*f).max(8)))))
}

/// `range(start, stop [, step])` and `generate_series`: (stop − start) / step + 1
/// elements of 8 bytes, for numbers, dates and timestamps (a step in months counts as
/// 28 days, its shortest). One argument is `range(0, stop)`.
fn range_bytes(args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let (start, stop, step) = match args.len() {
        1 => (None, 0, None),
        2 => (Some(0), 1, None),
        _ => (Some(0), 1, Some(2)),
    };
    let Some(first) = column(args, stop, rows)? else { return Ok(0) };
    let in_time = matches!(first.data_type(), DataType::Date32 | DataType::Date64 | DataType::Timestamp(..));
    let as_numbers = |i: usize| -> Result<Vec<Option<i128>>> {
        let array = column(args, i, rows)?.expect("present");
        let array = match in_time {
            true => cast(&cast(&array, &DataType::Timestamp(TimeUnit::Nanosecond, None))?, &DataType::Int64)?,
            false => cast(&array, &DataType::Int64)?,
        };
        let numbers = array.as_primitive::<Int64Type>();
        Ok((0..numbers.len()).map(|r| (!numbers.is_null(r)).then(|| numbers.value(r) as i128)).collect())
    };
    let stops = as_numbers(stop)?;
    let starts = match start {
        Some(i) => as_numbers(i)?,
        None => vec![Some(0); stops.len()],
    };
    let steps: Vec<Option<i128>> = match step {
        None if in_time => return Ok(0), // no default step for times: DataFusion refuses the call
        None => vec![Some(1); stops.len()],
        Some(i) => {
            let array = column(args, i, rows)?.expect("present");
            match array.data_type() {
                DataType::Interval(_) => {
                    let array =
                        cast(&array, &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano))?;
                    let intervals = array.as_primitive::<IntervalMonthDayNanoType>();
                    (0..intervals.len())
                        .map(|r| {
                            (!intervals.is_null(r)).then(|| {
                                let v = intervals.value(r);
                                const DAY: i128 = 86_400_000_000_000;
                                v.months as i128 * 28 * DAY + v.days as i128 * DAY + v.nanoseconds as i128
                            })
                        })
                        .collect()
                }
                _ => {
                    let array = cast(&array, &DataType::Int64)?;
                    let numbers = array.as_primitive::<Int64Type>();
                    (0..numbers.len()).map(|r| (!numbers.is_null(r)).then(|| numbers.value(r) as i128)).collect()
                }
            }
        }
    };
    Ok(total((0..stops.len()).map(|r| match (starts[r], stops[r], steps[r]) {
        (Some(start), Some(stop), Some(step)) if step != 0 => {
            let elements = ((stop - start) / step).max(-1) + 1;
            (elements.clamp(0, u64::MAX as i128 / 8) as u64) * 8
        }
        _ => 0,
    })))
}

/// The name the `||` operator on strings is planned as.
pub const STRING_CONCAT: &str = "string_concat";

/// `a || b` on strings (and binary values) as a function: DataFusion's kernel for the
/// operator (NULL when either side is NULL, unlike `concat`), so that it can be bounded.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StringConcatFunction {
    signature: Signature,
}

impl Default for StringConcatFunction {
    fn default() -> Self {
        Self { signature: Signature::any(2, datafusion::logical_expr::Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for StringConcatFunction {
    fn name(&self) -> &str {
        STRING_CONCAT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Both sides have the type the operator's coercion gave them.
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalars = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let joined = datafusion::arrow::compute::kernels::concat_elements::concat_elements_dyn(&arrays[0], &arrays[1])?;
        Ok(match scalars {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&joined, 0)?),
            false => ColumnarValue::Array(joined),
        })
    }

    /// As the operator's: plans and results read `a || b`.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(format!("{} || {}", args[0].schema_name(), args[1].schema_name()))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOCUMENTATION: std::sync::LazyLock<Documentation> = std::sync::LazyLock::new(|| {
            Documentation::builder(
                datafusion::logical_expr::DocSection { include: true, label: "String Functions", description: None },
                "The `||` operator on strings, as slicetest plans it: a || b, NULL when either is NULL; \
                 refused when one call would make more than 64 MiB.",
                "string_concat(a, b)",
            )
            .with_sql_example("SELECT 'a' || 'b'")
            .build()
        });
        Some(&DOCUMENTATION)
    }
}

/// An analyzer rule (after type coercion): the `||` operator on strings becomes
/// [`StringConcatFunction`], bounded, and a call of a function [`bounded`] knows that was
/// planned with DataFusion's own instance (as a list `||` is, to `array_concat`) gets the
/// bounded one. Output names are kept.
#[derive(Debug)]
pub struct BoundStringConcat {
    string_concat: Arc<ScalarUDF>,
}

impl Default for BoundStringConcat {
    fn default() -> Self {
        let function = operator_functions().pop().expect("string_concat");
        Self { string_concat: Arc::new(function) }
    }
}

impl BoundStringConcat {
    /// The rule's name.
    pub const NAME: &str = "slicetest_bound_string_concat";
}

/// `expr` with a call of a function [`bounded`] knows made with an unbounded instance
/// given the bounded one, and, with `string_concat`, the `||` operator made a call of it.
fn bound_call(
    expr: Expr,
    string_concat: Option<&Arc<ScalarUDF>>,
) -> Result<datafusion::common::tree_node::Transformed<Expr>> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::Operator;
    use datafusion::logical_expr::expr::{BinaryExpr, ScalarFunction};
    Ok(match (expr, string_concat) {
        (Expr::BinaryExpr(BinaryExpr { left, op: Operator::StringConcat, right }), Some(f)) => {
            Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(f.clone(), vec![*left, *right])))
        }
        (Expr::ScalarFunction(call), _) => match bounded(&call.func) {
            Some(function) => {
                Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(function), call.args)))
            }
            None => Transformed::no(Expr::ScalarFunction(call)),
        },
        (other, _) => Transformed::no(other),
    })
}

impl datafusion::optimizer::AnalyzerRule for BoundStringConcat {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &ConfigOptions,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::TreeNode;
        use datafusion::logical_expr::expr_rewriter::NamePreserver;
        plan.transform_up_with_subqueries(|plan| {
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                Ok(expr.transform_up(|e| bound_call(e, Some(&self.string_concat)))?.update_data(|e| name.restore(e)))
            })?
            .map_data(|plan| plan.recompute_schema())
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        Self::NAME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sql: &str) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let ctx = SessionContext::new();
        bound_function_outputs(&ctx);
        ctx.sql(sql).await?.collect().await
    }

    async fn refused(sql: &str) -> String {
        let err = run(sql).await.expect_err(sql).to_string();
        assert!(err.contains("more than the 64 MiB one call may make"), "{sql}: {err}");
        err
    }

    #[tokio::test]
    async fn calls_that_would_make_too_much_are_refused_before_they_run() {
        // Literal arguments (folded while planning) and column ones (at execution).
        let err = refused("SELECT repeat('x', 2000000000)").await;
        assert!(err.contains("repeat(…) would make about 1907 MiB"), "{err}");
        refused("SELECT max(length(repeat('x', (value * 50000000)::int))) FROM generate_series(1, 4)").await;
        refused("SELECT lpad('a', 100000000)").await;
        refused("SELECT rpad('a', 20000000, 'é')").await;
        refused("SELECT replace(repeat('x', 10000), 'x', repeat('y', 10000))").await;
        refused("SELECT regexp_replace(repeat('x', 10000), '', repeat('y', 10000), 'g')").await;
        refused("SELECT regexp_replace(repeat('x', 10000), 'x', repeat('\\0', 5000), 'g')").await;
        refused("SELECT array_repeat('x', 100000000)").await;
        refused("SELECT array_resize([1], 100000000)").await;
        refused("SELECT range(0, 100000000)").await;
        refused("SELECT generate_series(1, 100000000)").await;
        refused("SELECT cardinality(range(DATE '1970-01-01', DATE '2100-01-01', INTERVAL '1 second'))").await;
        refused("SELECT range(TIMESTAMP '2000-01-01', TIMESTAMP '2001-01-01', INTERVAL '1 microsecond')").await;
        // Many rows of a modest value add up within one call too.
        refused("SELECT max(length(repeat('x', (10000 + value % 2)::int))) FROM generate_series(1, 8192)").await;
        // What doubles: each step under the bound, the second over it.
        let err = refused(
            "SELECT max(length(s || s)) FROM (SELECT repeat('x', (5000 + value % 2)::int) AS s FROM generate_series(1, 8192))",
        )
        .await;
        assert!(err.contains("… || … would make about 78 MiB in one call (8192 rows)"), "{err}");
        for (sql, call) in [
            ("WITH a AS (SELECT repeat('x', 40000000) AS s) SELECT length(concat(s, s)) FROM a", "concat(…)"),
            (
                "WITH a AS (SELECT repeat('x', 40000000) AS s) SELECT length(concat_ws(',', s, s)) FROM a",
                "concat_ws(…)",
            ),
            ("WITH a AS (SELECT range(0, 5000000) AS v) SELECT cardinality(v || v) FROM a", "array_concat(…)"),
            (
                "WITH a AS (SELECT range(0, 5000000) AS v) SELECT cardinality(array_concat(v, v)) FROM a",
                "array_concat(…)",
            ),
            ("SELECT length(repeat('x', 40000000) || repeat('y', 40000000))", "… || …"),
        ] {
            let err = refused(sql).await;
            assert!(err.contains(&format!("{call} would make about 76 MiB")), "{sql}: {err}");
        }
    }

    #[tokio::test]
    async fn the_operator_keeps_its_names_and_results() {
        let plain = SessionContext::new();
        let queries = [
            "SELECT 'a' || 'b', 'a' || NULL, 'x' || CAST(1 AS VARCHAR)",
            "SELECT s || '-' || s AS joined, upper(s || s) FROM (VALUES ('p'), (NULL), ('q')) AS t(s) ORDER BY 1",
            "SELECT s || 'z', count(*) FROM (VALUES ('p'), ('p'), ('q')) AS t(s) GROUP BY s || 'z' ORDER BY 1",
            "SELECT make_array(1, 2) || make_array(3), make_array(1) || 2",
            "SELECT count(*) FROM (VALUES ('p'), ('q')) AS t(s) WHERE s || 'x' = 'px'",
        ];
        for sql in queries {
            let ctx = SessionContext::new();
            bound_function_outputs(&ctx);
            let (ours, theirs) = (ctx.sql(sql).await.unwrap(), plain.sql(sql).await.unwrap());
            let names = |df: &datafusion::prelude::DataFrame| -> Vec<String> {
                df.schema().fields().iter().map(|f| f.name().clone()).collect()
            };
            assert_eq!(names(&ours), names(&theirs), "{sql}");
            let (ours, theirs) = (ours.collect().await.unwrap(), theirs.collect().await.unwrap());
            let text = |batches: &[datafusion::arrow::array::RecordBatch]| {
                datafusion::arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string()
            };
            assert_eq!(text(&ours), text(&theirs), "{sql}");
        }
        // The operator runs as the bounded function.
        let ctx = SessionContext::new();
        bound_function_outputs(&ctx);
        let plan = ctx.sql("SELECT s || 'x' FROM (VALUES ('p')) AS t(s)").await.unwrap().into_optimized_plan().unwrap();
        assert!(format!("{plan}").contains("string_concat("), "{plan}");
    }

    #[tokio::test]
    async fn ordinary_calls_give_what_they_gave_before() {
        let cases = [
            ("SELECT repeat('ab', 3)", "ababab"),
            ("SELECT lpad('7', 3, '0')", "007"),
            ("SELECT rpad('a', 3, 'é')", "aéé"),
            ("SELECT replace('a/b/c', '/', '_')", "a_b_c"),
            ("SELECT regexp_replace('a/b/c.png', '^(.*)/([^/]*)$', '\\2')", "c.png"),
            ("SELECT regexp_replace('a1b22', '[0-9]', '#', 'g')", "a#b##"),
            ("SELECT array_to_string(array_repeat('x', 3), ',')", "x,x,x"),
            ("SELECT array_to_string(array_resize([1, 2], 3, 0), ',')", "1,2,0"),
            ("SELECT array_to_string(range(5), ',')", "0,1,2,3,4"),
            ("SELECT array_to_string(generate_series(1, 7, 3), ',')", "1,4,7"),
            ("SELECT array_to_string(range(10, 0, -4), ',')", "10,6,2"),
            ("SELECT cardinality(range(DATE '2024-01-01', DATE '2024-03-01', INTERVAL '1 month'))", "2"),
            ("SELECT max(length(repeat('x', (1000 + value % 2)::int))) FROM generate_series(1, 8192)", "1001"),
            ("SELECT concat('a', NULL, 'b')", "ab"),
            ("SELECT concat_ws('-', 'a', 'b', 'c')", "a-b-c"),
            ("SELECT array_to_string(array_concat([1], [2, 3]), ',')", "1,2,3"),
            ("SELECT 'a' || 'b' || 'c'", "abc"),
        ];
        for (sql, expected) in cases {
            let batches = run(sql).await.unwrap();
            let value = datafusion::arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap();
            assert_eq!(value, expected, "{sql}");
        }
    }
}

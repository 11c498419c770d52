//! An optimizer rule: a GROUP BY key that is a CASE choosing among string literals groups
//! on the number of the literal it chose, and the literal is put back after the aggregate.
//!
//! `GROUP BY CASE WHEN width < 640 THEN 's' WHEN width < 1280 THEN 'm' ELSE 'l' END` is how
//! users bucket a column. DataFusion evaluates such a CASE into a string column, row by
//! row, and hashes the strings; bench-sql measured that at 2.2–2.7× DuckDB's time. The
//! same CASE with `THEN 0 … THEN 1 … ELSE 2` builds an integer column and groups it
//! through the primitive hash table; a CASE on the few groups after the aggregate turns
//! the numbers back into the literals. Results are unchanged: each distinct literal gets
//! one number (two branches with the same literal still make one group), and the rule
//! leaves alone a CASE with a NULL or non-literal result, grouping sets, and keys that
//! are not strings.
//!
//! Where the CASE has no operand, its literals are distinct and every condition is one
//! that cannot fail on any row (comparisons, AND/OR/NOT, IS NULL, BETWEEN, IN over
//! columns and literals), the number is [`CaseBranchFunction`] over the conditions
//! instead: every condition evaluated once over the whole batch, the first true one
//! picked per row. DataFusion's general CASE evaluates each condition on the rows the
//! earlier ones left and gathers the results (bench-sql: a three-way bucket took twice
//! the time of a two-way one, which has a fast path); evaluating a condition on rows an
//! earlier branch took is safe only because these conditions cannot fail.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Aggregate, Case, ColumnarValue, Documentation, Expr, LogicalPlan, Operator, Projection, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct GroupOnCaseBranchNumbers;

/// The distinct string literals a CASE can return, in order of first appearance, or
/// `None` when it is not such a CASE.
fn literal_results(case: &Case) -> Option<Vec<ScalarValue>> {
    let results = case.when_then_expr.iter().map(|(_, then)| then.as_ref()).chain(case.else_expr.as_deref());
    let mut distinct: Vec<ScalarValue> = Vec::new();
    for result in results {
        let Expr::Literal(value, None) = result else { return None };
        let is_string = matches!(
            value,
            ScalarValue::Utf8(Some(_)) | ScalarValue::LargeUtf8(Some(_)) | ScalarValue::Utf8View(Some(_))
        );
        if !is_string {
            return None;
        }
        if !distinct.contains(value) {
            distinct.push(value.clone());
        }
    }
    Some(distinct)
}

/// The CASE a group key is, looking through an alias.
fn case_of(key: &Expr) -> Option<&Case> {
    match key {
        Expr::Case(case) => Some(case),
        Expr::Alias(alias) => match alias.expr.as_ref() {
            Expr::Case(case) => Some(case),
            _ => None,
        },
        _ => None,
    }
}

/// The CASE with each result replaced by its literal's number in `values`.
fn numbered(case: &Case, values: &[ScalarValue]) -> Expr {
    let number = |result: &Expr| -> Box<Expr> {
        let Expr::Literal(value, _) = result else { unreachable!("checked by literal_results") };
        let index = values.iter().position(|v| v == value).expect("every result was collected") as i32;
        Box::new(lit(index))
    };
    Expr::Case(Case {
        expr: case.expr.clone(),
        when_then_expr: case.when_then_expr.iter().map(|(when, then)| (when.clone(), number(then))).collect(),
        else_expr: case.else_expr.as_deref().map(number),
    })
}

/// Whether evaluating `expr` on any row of its input cannot fail: columns and literals
/// under comparisons, AND/OR/NOT, the IS tests, BETWEEN and IN lists. No casts (a string
/// cast to a number fails on some rows), arithmetic (overflow) or function calls.
fn cannot_fail(expr: &Expr) -> bool {
    use Operator::*;
    match expr {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(binary) => {
            matches!(binary.op, Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom)
                && cannot_fail(&binary.left)
                && cannot_fail(&binary.right)
        }
        Expr::Not(e)
        | Expr::IsNull(e)
        | Expr::IsNotNull(e)
        | Expr::IsTrue(e)
        | Expr::IsFalse(e)
        | Expr::IsNotTrue(e)
        | Expr::IsNotFalse(e)
        | Expr::IsUnknown(e)
        | Expr::IsNotUnknown(e) => cannot_fail(e),
        Expr::Between(between) => cannot_fail(&between.expr) && cannot_fail(&between.low) && cannot_fail(&between.high),
        Expr::InList(in_list) => cannot_fail(&in_list.expr) && in_list.list.iter().all(cannot_fail),
        _ => false,
    }
}

/// `case_branch(when_0, …)` for a CASE without operand whose literals (THENs, then ELSE)
/// are all distinct and whose conditions cannot fail: then branch `i`'s literal is
/// `values[i]` and the ELSE's is `values[k]`, which is exactly what the function returns.
fn branch_number(case: &Case, values: &[ScalarValue]) -> Option<Expr> {
    let distinct = values.len() == case.when_then_expr.len() + usize::from(case.else_expr.is_some());
    if case.expr.is_some() || !distinct || !case.when_then_expr.iter().all(|(when, _)| cannot_fail(when)) {
        return None;
    }
    let conditions = case.when_then_expr.iter().map(|(when, _)| when.as_ref().clone()).collect();
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::from(CaseBranchFunction::default())),
        conditions,
    )))
}

/// `case_branch(c_0, …, c_k-1)`: per row, the position of the first condition that is
/// true (NULL counts as not true, as in a CASE), or `k` when none is. All conditions are
/// evaluated on every row, so it stands in for a CASE only where they cannot fail.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CaseBranchFunction {
    signature: Signature,
}

impl Default for CaseBranchFunction {
    fn default() -> Self {
        CaseBranchFunction { signature: Signature::variadic(vec![DataType::Boolean], Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for CaseBranchFunction {
    fn name(&self) -> &str {
        "case_branch"
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: std::sync::OnceLock<Documentation> = std::sync::OnceLock::new();
        Some(DOC.get_or_init(|| {
            crate::function_doc(
                "The position (from 0) of the first condition that is true, or the number of conditions when none \
                 is (NULL counts as not true). The number a CASE group key is grouped on.",
                "case_branch(condition_0[, condition_1, …])",
                &[("condition_i", "a boolean expression")],
                "SELECT case_branch(width < 640, width < 1280) AS size, count(*) FROM images GROUP BY 1",
            )
        }))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut branch = vec![args.args.len() as i32; rows];
        // Last condition first: an earlier true condition overwrites a later one.
        for (i, condition) in args.args.iter().enumerate().rev() {
            let condition = condition.to_array(rows)?;
            let Some(condition) = condition.as_boolean_opt() else {
                return exec_err!("case_branch: condition {i} is {}, not a boolean", condition.data_type());
            };
            let mut true_rows = condition.values().clone();
            if let Some(valid) = condition.nulls() {
                true_rows = &true_rows & valid.inner();
            }
            for row in true_rows.set_indices() {
                branch[row] = i as i32;
            }
        }
        Ok(ColumnarValue::Array(Arc::new(Int32Array::from(branch))))
    }
}

/// `CASE number WHEN 0 THEN values[0] … END`, with an ELSE only where the original had
/// one (so that a row no branch matched stays NULL, and the column keeps its
/// nullability).
fn restored(number: Expr, values: &[ScalarValue], has_else: bool) -> Expr {
    let mut whens: Vec<(Box<Expr>, Box<Expr>)> =
        values.iter().enumerate().map(|(i, v)| (Box::new(lit(i as i32)), Box::new(lit(v.clone())))).collect();
    let else_expr = if has_else { whens.pop().map(|(_, value)| value) } else { None };
    if has_else && whens.is_empty() {
        return *else_expr.expect("one value");
    }
    Expr::Case(Case { expr: Some(Box::new(number)), when_then_expr: whens, else_expr })
}

impl OptimizerRule for GroupOnCaseBranchNumbers {
    fn name(&self) -> &str {
        "slicetest_group_on_case_branch_numbers"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
        if matches!(aggregate.group_expr.as_slice(), [Expr::GroupingSet(_)]) {
            return Ok(Transformed::no(plan));
        }
        // Per group key: the CASE and its literals when it is a literal CASE.
        let cases: Vec<Option<(&Case, Vec<ScalarValue>)>> = aggregate
            .group_expr
            .iter()
            .map(|key| case_of(key).and_then(|case| literal_results(case).map(|values| (case, values))))
            .collect();
        if cases.iter().all(Option::is_none) {
            return Ok(Transformed::no(plan));
        }
        let group_expr = aggregate
            .group_expr
            .iter()
            .zip(&cases)
            .enumerate()
            .map(|(i, (key, case))| match case {
                Some((case, values)) => branch_number(case, values)
                    .unwrap_or_else(|| numbered(case, values))
                    .alias(format!("__slicetest_case_key_{i}")),
                None => key.clone(),
            })
            .collect();
        let numbered = Aggregate::try_new(aggregate.input.clone(), group_expr, aggregate.aggr_expr.clone())?;
        // Above it, the original columns in their original order, names and qualifiers
        // (the group keys come first in an aggregate's schema).
        let projection = aggregate
            .schema
            .iter()
            .enumerate()
            .map(|(i, (qualifier, field))| {
                let (new_qualifier, new_field) = numbered.schema.qualified_field(i);
                let column = Expr::Column(Column::new(new_qualifier.cloned(), new_field.name()));
                let expr = match cases.get(i).and_then(Option::as_ref) {
                    Some((case, values)) => restored(column, values, case.else_expr.is_some()),
                    None => column,
                };
                expr.alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        let input = Arc::new(LogicalPlan::Aggregate(numbered));
        Ok(Transformed::yes(LogicalPlan::Projection(Projection::try_new(projection, input)?)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::{CaseBranchFunction, GroupOnCaseBranchNumbers};

    #[test]
    fn case_branch_picks_the_first_true_condition_and_counts_null_as_not_true() {
        use datafusion::arrow::array::{Array, AsArray, BooleanArray};
        use datafusion::arrow::datatypes::Int32Type;
        use datafusion::common::ScalarValue;
        use datafusion::config::ConfigOptions;
        use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl};
        let first = BooleanArray::from(vec![Some(true), Some(false), None, Some(false), None]);
        let second = BooleanArray::from(vec![Some(true), Some(true), Some(true), Some(false), None]);
        let args = vec![
            ColumnarValue::Array(Arc::new(first)),
            ColumnarValue::Array(Arc::new(second)),
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))),
        ];
        let arg_fields = args.iter().map(|_| Arc::new(Field::new("c", DataType::Boolean, true))).collect();
        let out = CaseBranchFunction::default()
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: 5,
                return_field: Arc::new(Field::new("b", DataType::Int32, false)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
            .to_array(5)
            .unwrap();
        assert_eq!(out.null_count(), 0);
        assert_eq!(out.as_primitive::<Int32Type>().values().to_vec(), vec![0, 1, 1, 3, 3]);
    }

    fn context(with_rule: bool) -> SessionContext {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_optimizer_rule(Arc::new(GroupOnCaseBranchNumbers));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let schema = Arc::new(Schema::new(vec![Field::new("w", DataType::Int64, true)]));
        let values = Int64Array::from(vec![Some(1), Some(5), Some(9), None, Some(12), Some(5), Some(30)]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        ctx
    }

    /// Runs `sql` with and without the rule, asserts the results are the same, and returns
    /// the plan with the rule.
    async fn plan_with_same_results(sql: &str) -> String {
        let mut outputs = Vec::new();
        for with_rule in [true, false] {
            let df = context(with_rule).sql(sql).await.unwrap();
            let plan = df.clone().into_optimized_plan().unwrap().display_indent().to_string();
            outputs.push((pretty_format_batches(&df.collect().await.unwrap()).unwrap().to_string(), plan));
        }
        assert_eq!(outputs[0].0, outputs[1].0, "{sql}");
        outputs.swap_remove(0).1
    }

    #[tokio::test]
    async fn literal_case_keys_group_on_numbers_with_the_plain_case_results() {
        // Distinct literals and conditions that cannot fail: grouped on case_branch (NULL
        // w makes every condition NULL: the ELSE, or NULL without one).
        for sql in [
            "SELECT CASE WHEN w < 5 THEN 'low' WHEN w < 10 THEN 'mid' ELSE 'high' END AS b, count(*), sum(w) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT CASE WHEN w < 5 THEN 'low' WHEN w > 10 THEN 'high' END, count(*) FROM t GROUP BY 1 ORDER BY 1 NULLS FIRST",
            "SELECT CASE WHEN w IS NULL THEN 'none' WHEN w BETWEEN 5 AND 9 OR w IN (30, 31) THEN 'odd' \
             WHEN NOT w > 2 THEN 'tiny' ELSE 'rest' END AS b, count(*) FROM t GROUP BY 1 ORDER BY 1",
        ] {
            let plan = plan_with_same_results(sql).await;
            assert!(plan.contains("__slicetest_case_key_0"), "{sql}: not rewritten:\n{plan}");
            assert!(plan.contains("case_branch("), "{sql}: not on case_branch:\n{plan}");
        }
        // Numbered by the general CASE: a condition that can fail (a division by zero
        // when a row with w = 0 reached it), a literal twice, a CASE with an operand (also
        // next to a plain key).
        for sql in [
            "SELECT CASE WHEN w > 100 THEN 'big' WHEN 60 / w > 5 THEN 'small' ELSE 'mid' END, count(*) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT CASE WHEN w < 5 THEN 'out' WHEN w > 10 THEN 'out' ELSE 'in' END, count(*) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT CASE w WHEN 5 THEN 'five' ELSE 'other' END, count(*) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT CASE w WHEN 5 THEN 'five' WHEN 9 THEN 'five' ELSE 'other' END AS b, w > 4 AS big, count(*) FROM t GROUP BY 1, 2 ORDER BY 1, 2",
        ] {
            let plan = plan_with_same_results(sql).await;
            assert!(plan.contains("__slicetest_case_key_0") && !plan.contains("case_branch("), "{sql}:\n{plan}");
        }
        // Not rewritten: a non-literal result, a NULL result, a number, a grouping set.
        for sql in [
            "SELECT CASE WHEN w < 5 THEN 'low' ELSE concat('x', w) END, count(*) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT CASE WHEN w < 5 THEN 'low' ELSE NULL END, count(*) FROM t GROUP BY 1 ORDER BY 1 NULLS FIRST",
            "SELECT CASE WHEN w < 5 THEN 1 ELSE 2 END, count(*) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT CASE WHEN w < 5 THEN 'low' ELSE 'high' END AS b, count(*) FROM t \
             GROUP BY ROLLUP(CASE WHEN w < 5 THEN 'low' ELSE 'high' END) ORDER BY 1 NULLS FIRST",
        ] {
            let plan = plan_with_same_results(sql).await;
            assert!(!plan.contains("__slicetest_case_key"), "{sql}: rewritten:\n{plan}");
        }
    }
}

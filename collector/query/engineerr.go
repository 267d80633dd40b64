package query

import (
	"fmt"
	"strings"
)

// engineErrors are the caller-facing texts of engine errors, by ClickHouse
// error code. The engine's own message is never passed on: functions such
// as base64Decode, toUUID, toDate or toIPv4 print the offending value in
// it, UNKNOWN_TABLE suggests the names of other tables, and scrubbing
// quoted literals does not catch values printed bare. Each text names the
// class of mistake, which is what a dashboard or an agent needs to fix a
// query, and nothing the data could have put there.
var engineErrors = map[int]struct{ code, text string }{
	6:   {CodeQueryFailed, "a value cannot be parsed as the type asked for (CANNOT_PARSE_TEXT); use the OrNull or OrZero variant of the conversion"},
	27:  {CodeQueryFailed, "a value cannot be parsed as the type asked for (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"},
	38:  {CodeQueryFailed, "a value cannot be parsed as a date (CANNOT_PARSE_DATE); use toDateOrNull"},
	41:  {CodeQueryFailed, "a value cannot be parsed as a date and time (CANNOT_PARSE_DATETIME); use parseDateTimeBestEffortOrNull"},
	42:  {CodeQueryFailed, "a function got the wrong number of arguments (NUMBER_OF_ARGUMENTS_DOESNT_MATCH)"},
	43:  {CodeQueryFailed, "a function got an argument of the wrong type (ILLEGAL_TYPE_OF_ARGUMENT)"},
	44:  {CodeQueryFailed, "a function got a column it cannot take (ILLEGAL_COLUMN)"},
	46:  {CodeQueryFailed, "unknown function (UNKNOWN_FUNCTION)"},
	47:  {CodeQueryFailed, "unknown column or alias (UNKNOWN_IDENTIFIER); describe_table lists the columns of events"},
	48:  {CodeQueryFailed, "not supported by the engine (NOT_IMPLEMENTED)"},
	53:  {CodeQueryFailed, "types do not match (TYPE_MISMATCH)"},
	60:  {CodeQueryRefused, "unknown table; only events can be read"},
	62:  {CodeQueryRefused, "syntax error (SYNTAX_ERROR)"},
	69:  {CodeQueryFailed, "an argument is out of range (ARGUMENT_OUT_OF_BOUND)"},
	70:  {CodeQueryFailed, "a value cannot be converted to the type asked for (CANNOT_CONVERT_TYPE)"},
	72:  {CodeQueryFailed, "a value cannot be parsed as a number (CANNOT_PARSE_NUMBER)"},
	81:  {CodeQueryRefused, "unknown database; only events can be read"},
	117: {CodeQueryFailed, "a value is not valid input for a function (INCORRECT_DATA)"},
	153: {CodeQueryFailed, "division by zero (ILLEGAL_DIVISION)"},
	158: {CodeTooLarge, "the query reads more rows than allowed (TOO_MANY_ROWS)"},
	159: {CodeTimeout, "the query ran longer than allowed (TIMEOUT_EXCEEDED)"},
	160: {CodeTimeout, "the query is too slow to finish in the allowed time (TOO_SLOW)"},
	164: {CodeQueryRefused, "the query path is read-only (READONLY)"},
	179: {CodeQueryFailed, "an alias names two different expressions (MULTIPLE_EXPRESSIONS_FOR_ALIAS)"},
	184: {CodeQueryFailed, "an aggregate function is used where it cannot be (ILLEGAL_AGGREGATION)"},
	190: {CodeQueryFailed, "arrays of different sizes (SIZES_OF_ARRAYS_DONT_MATCH)"},
	215: {CodeQueryFailed, "a column is neither aggregated nor in GROUP BY (NOT_AN_AGGREGATE)"},
	241: {CodeTooLarge, "the query needs more memory than allowed (MEMORY_LIMIT_EXCEEDED)"},
	307: {CodeTooLarge, "the query reads more bytes than allowed (TOO_MANY_BYTES)"},
	352: {CodeQueryFailed, "a column name is ambiguous; qualify it with its table alias (AMBIGUOUS_COLUMN_NAME)"},
	386: {CodeQueryFailed, "the values have no common type (NO_SUPERTYPE)"},
	395: {CodeQueryFailed, "throwIf raised an error (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)"},
	396: {CodeTooLarge, "the answer has more rows or bytes than allowed (TOO_MANY_ROWS_OR_BYTES)"},
	407: {CodeQueryFailed, "a decimal value overflows its type (DECIMAL_OVERFLOW)"},
	497: {CodeQueryRefused, "not allowed (ACCESS_DENIED)"},
}

// namedErrors are the codes whose text may name the identifier at fault,
// when the caller wrote it (see engineError).
var namedErrors = map[int]bool{46: true, 47: true, 215: true, 352: true}

// engineError is the answer to an engine error with ClickHouse code code,
// raised by the statement the caller wrote as sql ("" for statements the
// collector compiled). For an unknown identifier or function it names the
// first backquoted name of the engine's message, but only when that name
// is an identifier written in sql: the caller's own words, never data.
func engineError(code int, msg, sql string) *ErrorBody {
	e, ok := engineErrors[code]
	if !ok {
		return &ErrorBody{Code: CodeQueryFailed, Message: fmt.Sprintf("query failed (engine error %d)", code)}
	}
	if namedErrors[code] && sql != "" {
		if name := backquoted(msg); name != "" && isIdentifier(name) && strings.Contains(sql, name) {
			return &ErrorBody{Code: e.code, Message: e.text + ": " + name}
		}
	}
	return &ErrorBody{Code: e.code, Message: e.text}
}

// backquoted returns the first `name` of msg, or "".
func backquoted(msg string) string {
	i := strings.IndexByte(msg, '`')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(msg[i+1:], '`')
	if j < 0 {
		return ""
	}
	return msg[i+1 : i+1+j]
}

// isIdentifier reports whether s is a plain SQL identifier, possibly
// qualified (a.b), of at most 64 bytes.
func isIdentifier(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && c != '.' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// JSON Schema to grammar (GBNF, see grammar.hpp), for structured output: the text a
// constrained generation produces parses as JSON and validates against the schema.
//
// Supported: "type" (object, array, string, number, integer, boolean, null, or a list of
// them), "properties", "required", "additionalProperties" (false: only the listed
// properties; absent or true: more "key": value pairs may follow them; a schema: their
// values follow it), "items", "minItems", "maxItems", "prefixItems", "enum", "const",
// "anyOf", "oneOf" (as anyOf), "allOf" of one schema, "$ref" to "#/$defs/NAME" or
// "#/definitions/NAME" (recursion included), "minLength"/"maxLength" for strings,
// "description"/"title"/"default"/"examples"/"$schema"/"$id"/"format" (annotations, no
// constraint). Properties come out in the schema's order, required ones always, optional
// ones where the model chooses. Anything else that would constrain the value ("pattern",
// "minimum", "multipleOf", "not", "if" ...) is refused by name, never silently ignored.
#pragma once

#include "common/error.hpp"

#include <boost/json/value.hpp>

#include <string>
#include <string_view>

namespace llamawire {

// The grammar for `schema` (a JSON object or `true`), or an error naming what is not
// supported and where ("properties.age: minimum is not supported").
Result<std::string> json_schema_to_gbnf(const boost::json::value& schema);

// The same schema's rules for a larger grammar: the value is rule `name`, the helper rules'
// names begin with "name-", and they use the primitives (json-string, json-value, ws ...)
// that json_primitives_gbnf() defines once for the whole grammar.
Result<std::string> json_schema_rules(const boost::json::value& schema, const std::string& name);
std::string json_primitives_gbnf();

// A GBNF literal (quoted, escaped) matching exactly `text`.
std::string gbnf_literal(std::string_view text);

// The grammar of any JSON object (response_format json_object).
std::string json_object_gbnf();

}  // namespace llamawire

package api

// validJSON reports whether data is one JSON value, as encoding/json's
// Valid does: the same grammar (RFC 8259), the same nesting limit, and the
// same tolerance of invalid UTF-8 inside strings. It is a straight scan, a
// few times faster than encoding/json's state machine; FuzzValidJSON
// checks the two always agree.
func validJSON(data []byte) bool {
	const maxDepth = 10000 // encoding/json's maxNestingDepth
	i := skipSpace(data, 0)
	// stack holds, for each open container, '{' or '['.
	var stack []byte
	for {
		// A value starts at i.
		if i >= len(data) {
			return false
		}
		switch c := data[i]; {
		case c == '{' || c == '[':
			if len(stack) >= maxDepth {
				return false
			}
			stack = append(stack, c)
			i = skipSpace(data, i+1)
			if i < len(data) && (c == '{' && data[i] == '}' || c == '[' && data[i] == ']') {
				stack = stack[:len(stack)-1]
				i++
				break // an empty container is a complete value
			}
			if c == '{' {
				if i = scanKey(data, i); i < 0 {
					return false
				}
			}
			continue // the first member's value
		case c == '"':
			if i = scanString(data, i); i < 0 {
				return false
			}
		case c == '-' || '0' <= c && c <= '9':
			if i = scanNumber(data, i); i < 0 {
				return false
			}
		case c == 't':
			if i = scanLiteral(data, i, "true"); i < 0 {
				return false
			}
		case c == 'f':
			if i = scanLiteral(data, i, "false"); i < 0 {
				return false
			}
		case c == 'n':
			if i = scanLiteral(data, i, "null"); i < 0 {
				return false
			}
		default:
			return false
		}
		// A value ended at i: close containers, or go on to the next member.
		for {
			i = skipSpace(data, i)
			if len(stack) == 0 {
				return i == len(data)
			}
			if i >= len(data) {
				return false
			}
			top := stack[len(stack)-1]
			switch data[i] {
			case ',':
				i = skipSpace(data, i+1)
				if top == '{' {
					if i = scanKey(data, i); i < 0 {
						return false
					}
				}
			case '}', ']':
				if top == '{' && data[i] != '}' || top == '[' && data[i] != ']' {
					return false
				}
				stack = stack[:len(stack)-1]
				i++
				continue
			default:
				return false
			}
			break
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanKey scans `"key" :` and the space after it, returning where the value
// starts, or -1.
func scanKey(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return -1
	}
	if i = scanString(data, i); i < 0 {
		return -1
	}
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != ':' {
		return -1
	}
	return skipSpace(data, i+1)
}

// scanString scans a string starting at the quote at i and returns the
// index after its closing quote, or -1.
func scanString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			i++
			if i >= len(data) {
				return -1
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(data) {
					return -1
				}
				for _, h := range data[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return -1
					}
				}
				i += 4
			default:
				return -1
			}
		}
	}
	return -1
}

// scanNumber scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func scanNumber(data []byte, i int) int {
	digits := func(i int) int {
		start := i
		for i < len(data) && '0' <= data[i] && data[i] <= '9' {
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
	if data[i] == '-' {
		i++
	}
	if i >= len(data) {
		return -1
	}
	if data[i] == '0' {
		i++
	} else if i = digits(i); i < 0 {
		return -1
	}
	if i < len(data) && data[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}

func scanLiteral(data []byte, i int, lit string) int {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

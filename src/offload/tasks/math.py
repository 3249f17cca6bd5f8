"""Exact math task types: ``math.factorial`` and ``math.evaluate``.

LLMs get big integers and fractions wrong; these compute them exactly.
"""

from __future__ import annotations

import decimal
import math
import re
from fractions import Fraction
from typing import Annotated, NamedTuple, TypedDict

from pydantic import BeforeValidator, Field

from offload.core.registry import Registry
from offload.domain.errors import Fatal

#: This family's task types; :func:`offload.tasks.register_builtins` copies them.
registry = Registry()

#: Largest ``n`` for ``math.factorial`` (100000! has 456,574 digits).
MAX_FACTORIAL_N = 100_000
#: Results below this are returned as JSON numbers; larger ones as decimal strings, because
#: JSON readers that use doubles (JavaScript, many LLM tool layers) lose digits beyond it.
MAX_SAFE_INTEGER = 2**53
#: Longest expression ``math.evaluate`` accepts.
MAX_EXPRESSION_CHARS = 10_000
#: Largest numerator or denominator ``math.evaluate`` computes, in decimal digits.
MAX_DIGITS = 10_000
#: Deepest nesting of parentheses, signs and powers ``math.evaluate`` follows.
MAX_NESTING = 100
#: Significant digits of the approximate ``decimal`` field of ``math.evaluate``.
DECIMAL_DIGITS = 30

# Numbers below 2**_MAX_BITS have at most MAX_DIGITS digits; _DIGIT_LIMIT settles the rest.
_MAX_BITS = math.floor(MAX_DIGITS * math.log2(10))
_DIGIT_LIMIT = 10**MAX_DIGITS
# Exact: enough precision for any product, and an error rather than silent rounding.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.Inexact, decimal.Rounded, decimal.Overflow, decimal.InvalidOperation],
)
_APPROX = decimal.Context(prec=DECIMAL_DIGITS, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def _refuse_bool(value: object) -> object:
    # pydantic's lax int reads true as 1, but `{"n": true}` is a caller's mistake.
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    return value


class EvaluateResult(TypedDict):
    """What ``math.evaluate`` returns."""

    value: str
    decimal: str
    is_integer: bool


def int_to_str(value: int) -> str:
    """Decimal digits of ``value``, with no limit on length.

    ``str(int)`` refuses more than 4,300 digits (CPython's guard against its quadratic
    conversion); libmpdec converts huge integers itself.
    """
    try:
        return str(value)
    except ValueError:
        return str(decimal.Decimal(value))


def _product(lo: int, hi: int) -> decimal.Decimal:
    # Product of lo..hi-1 as a balanced tree in libmpdec, whose fast multiplication and
    # linear str() make 100000! take ~0.1 s; Python ints would spend seconds printing it.
    if hi - lo <= 16:
        return _EXACT.create_decimal(math.prod(range(lo, hi)))
    mid = (lo + hi) // 2
    return _EXACT.multiply(_product(lo, mid), _product(mid, hi))


@registry.task("math.factorial", output_schema={"type": ["integer", "string"]})
def factorial(
    n: Annotated[
        int,
        Field(ge=0, le=MAX_FACTORIAL_N, description="0 to 100000"),
        # After Field, so the limits stay plain JSON Schema minimum/maximum.
        BeforeValidator(_refuse_bool),
    ],
) -> int | str:
    """Exact factorial n! for 0 <= n <= 100000.

    Returns a JSON integer when n! < 2**53 (n <= 18, e.g. 10 -> 3628800) and otherwise the
    exact value as a decimal string (e.g. 30 -> "265252859812191058636308480000000"), so no
    JSON reader rounds it.
    """
    if n <= 20:
        value = math.factorial(n)
        return value if value < MAX_SAFE_INTEGER else str(value)
    return str(_product(1, n + 1))


_ALLOWED = "numbers, + - * / **, unary minus and parentheses"

# Python's number syntax minus complex and non-decimal literals: 12, 1_000, 0.5, .5, 1e-3.
_DIGITS = r"\d(?:_?\d)*"
_TOKENS = re.compile(
    rf"(?P<space>\s+)"
    rf"|(?P<number>(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?)"
    r"|(?P<op>\*\*|/(?!/)|[-+*()])"  # "//" is refused whole, not read as two divisions
    r"|(?P<name>[^\W\d]\w*)"
    r"|(?P<other>//|.)",
    re.DOTALL,
)
_HINTS = {
    "^": "; use ** for powers",
    "//": "; use / (the result is an exact fraction)",
    ",": "; write one expression",
}


class _Token(NamedTuple):
    kind: str
    text: str
    at: int  # 1-based character position, for messages


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKENS.finditer(source):
        kind = match.lastgroup or "other"
        text = match.group()
        at = match.start() + 1
        if kind == "space":
            continue
        if kind == "name":
            raise Fatal(f"name {text!r} at character {at} is not allowed: only {_ALLOWED} are")
        if kind == "other":
            raise Fatal(
                f"{text!r} at character {at} is not allowed: only {_ALLOWED} are"
                + _HINTS.get(text, "")
            )
        tokens.append(_Token(kind, text, at))
    return tokens


def _exceeds_digits(value: int) -> bool:
    # bit_length() first: an O(1) answer for all but numbers right at the limit.
    size = abs(value)
    return size.bit_length() >= _MAX_BITS and size >= _DIGIT_LIMIT


def _check_size(value: Fraction) -> Fraction:
    if _exceeds_digits(value.numerator) or _exceeds_digits(value.denominator):
        raise Fatal(f"a number in the calculation has more than {MAX_DIGITS:,} digits")
    return value


def _number(text: str) -> Fraction:
    # Decimal reads the digits as written (0.1 is exactly 1/10, not the nearest float) and
    # keeps "1e999999999" as digits plus exponent, so its size is checked before expanding.
    exact = decimal.Decimal(text)
    exponent = exact.as_tuple().exponent
    if not exact.is_zero() and isinstance(exponent, int) and abs(exponent) > 2 * MAX_DIGITS:
        raise Fatal(f"number {text} has more than {MAX_DIGITS:,} digits")
    return _check_size(Fraction(exact))


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise Fatal(
            f"exponent {exponent} is not an integer: only integer exponents give exact "
            "rational results (2**0.5 is irrational)"
        )
    e = exponent.numerator
    size = max(abs(base.numerator).bit_length(), base.denominator.bit_length())
    # Each factor adds at least size - 1 bits, so this refuses only results that are
    # certainly too large, and before spending any time on them (9**9**9).
    if size > 1 and (size - 1) * abs(e) > _MAX_BITS:
        shown = int_to_str(e) if abs(e) < 10**50 else "with over 50 digits"
        raise Fatal(
            f"exponent {shown} is too large: the result would have more than {MAX_DIGITS:,} digits"
        )
    return _check_size(base**e)


class _Parser:
    """Recursive descent over Python's arithmetic grammar, computing as it goes.

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := ("+" | "-") factor | power
    power  := atom ["**" factor]
    atom   := number | "(" expr ")"

    So ``-2**2`` is -4 and ``2**-1`` is 1/2, as in Python. Chains of ``+``/``*`` loop
    rather than recurse, so a sum of thousands of terms is fine; recursion (parentheses,
    signs, powers) is capped at ``MAX_NESTING``.
    """

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, *texts: str) -> _Token | None:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in texts:
            self.index += 1
            return token
        return None

    def unexpected(self, wanted: str) -> Fatal:
        token = self.peek()
        if token is None:
            return Fatal(f"not a valid expression: it ends where {wanted} was expected")
        return Fatal(
            f"not a valid expression: {token.text!r} at character {token.at} where "
            f"{wanted} was expected"
        )

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise Fatal(
                f"the expression nests parentheses, signs or powers more than {MAX_NESTING} deep"
            )

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek() is not None:
            raise self.unexpected("an operator or the end")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while op := self.take("+", "-"):
            right = self.term()
            value = _check_size(value + right if op.text == "+" else value - right)
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while op := self.take("*", "/"):
            right = self.factor()
            if op.text == "/" and right == 0:
                raise Fatal(f"division by zero (the '/' at character {op.at})")
            value = _check_size(value * right if op.text == "*" else value / right)
        return value

    def factor(self) -> Fraction:
        if sign := self.take("+", "-"):
            self.nest()
            value = self.factor()
            self.depth -= 1
            return -value if sign.text == "-" else value
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if op := self.take("**"):
            self.nest()
            exponent = self.factor()
            self.depth -= 1
            if base == 0 and exponent < 0:
                raise Fatal(f"division by zero (0 to a negative power at character {op.at})")
            return _power(base, exponent)
        return base

    def atom(self) -> Fraction:
        token = self.peek()
        if token is not None and token.kind == "number":
            self.index += 1
            return _number(token.text)
        if self.take("("):
            self.nest()
            value = self.expr()
            self.depth -= 1
            if not self.take(")"):
                raise self.unexpected("')'")
            return value
        raise self.unexpected("a number or '('")


def evaluate_exact(expression: str) -> Fraction:
    """Evaluate an arithmetic expression exactly over the rationals.

    Accepts integers, decimals (``0.1`` is exactly 1/10), ``1e-3``, ``+ - * / **``, unary
    signs and parentheses with Python's precedence (``-2**2`` is -4, ``2**3**2`` is 512).
    Anything else, division by zero, non-integer exponents and numbers over
    ``MAX_DIGITS`` digits raise :class:`~offload.domain.errors.Fatal` naming the problem.
    Nothing is executed: the text is tokenised and computed by a small parser.
    """
    tokens = _tokenize(expression)
    if not tokens:
        raise Fatal("the expression is empty")
    return _Parser(tokens).parse()


def _approximate(value: Fraction) -> str:
    quotient = _APPROX.divide(decimal.Decimal(value.numerator), decimal.Decimal(value.denominator))
    return str(quotient)


@registry.task(
    "math.evaluate",
    output_schema={
        "type": "object",
        "properties": {
            "value": {"type": "string", "description": "exact: an integer or p/q"},
            "decimal": {"type": "string", "description": "rounded to 30 significant digits"},
            "is_integer": {"type": "boolean"},
        },
        "required": ["value", "decimal", "is_integer"],
    },
)
def evaluate(
    expression: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_EXPRESSION_CHARS,
            description="arithmetic such as '1/3 + 0.25 * 2**10'",
        ),
    ],
) -> EvaluateResult:
    """Evaluate arithmetic exactly, with fractions instead of floating point.

    Accepts integers, decimals (0.1 means exactly 1/10), exponent notation (1e-3),
    + - * / **, unary minus and parentheses, with Python's precedence (-2**2 is -4).
    Exponents must be integers. Returns ``value``, the exact result as an integer or
    reduced fraction string ("1/3 + 1/6" -> "1/2", "0.1 + 0.2" -> "3/10"), ``decimal``,
    the result rounded to 30 significant digits, and ``is_integer``. Division by zero,
    names, function calls, other operators and numbers over 10,000 digits fail at once
    (no retry) with a message naming the problem.
    """
    value = evaluate_exact(expression)
    exact = int_to_str(value.numerator)
    if value.denominator != 1:
        exact += "/" + int_to_str(value.denominator)
    return {
        "value": exact,
        "decimal": _approximate(value),
        "is_integer": value.denominator == 1,
    }

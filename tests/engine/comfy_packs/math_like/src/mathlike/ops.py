"""Operation tables shared by the node modules (relative imports inside a pack)."""

import math

BINARY = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
          "Div": lambda a, b: a / b, "Pow": lambda a, b: a ** b, "Max": max, "Min": min}
CONDITIONS = {"Eq": lambda a, b: a == b, "Gt": lambda a, b: a > b, "Lt": lambda a, b: a < b}
UNARY = {"Neg": lambda a: -a, "Abs": abs, "Sqrt": math.sqrt, "Floor": math.floor}

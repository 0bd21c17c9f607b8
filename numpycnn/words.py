"""English for messages: the indefinite article a word takes, by its sound.

'an int', 'a dict', 'an 8x8 input', 'an 11x11 input', 'a 28x28 input', 'a uint8',
'an ndarray': error messages name types and sizes that are only known at run time.
"""

import re

#: Spelled with a vowel, said with a consonant: 'a uint8', 'a unit', 'a one-cycle'.
_CONSONANT_SOUNDS = ("uint", "uni", "use", "usu", "ure", "one", "once", "eu")
#: Spelled with a consonant, said with a vowel: 'an ndarray' (en-dee), 'an hour'.
_VOWEL_SOUNDS = ("nd", "hour", "honest", "heir")


def takes_an(word):
    """Whether ``word`` is said starting with a vowel sound."""
    text = str(word).lower()
    number = re.match(r"\d+", text)
    if number:  # eight, eighteen, eighty, eight hundred...; eleven, eleven thousand...
        digits = number.group()
        return digits.startswith("8") or (len(digits) % 3 == 2 and digits.startswith(("11", "18")))
    if text.startswith(_CONSONANT_SOUNDS):
        return False
    if text.startswith(_VOWEL_SOUNDS):
        return True
    return text[:1] in ("a", "e", "i", "o", "u")


def a(word):
    """``word`` with its indefinite article: a('int') == 'an int', a('8x8') == 'an 8x8'."""
    return f"{'an' if takes_an(word) else 'a'} {word}"

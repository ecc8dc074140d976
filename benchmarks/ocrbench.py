"""OCRBench v2 (ling99/OCRBench_v2; English and Chinese are two benchmarks): the official scorer per task
type, the row converter, and get_score.py's headline (the mean of the capability means). Det. protocol: what
the scorers read is det.final_answer, the boxed answer of the final reply whatever its length."""
import ast
import functools
import itertools
import json
import re
import warnings

from benchmarks.det import final_answer, levenshtein

# ---------------------------------------------------------------------------------------------------------
# OCRBench v2: the official scorer (Yuliang-Liu/MultimodalOCR, OCRBench_v2/eval_scripts/eval.py and
# vqa_metric.py, IoUscore_metric.py, TEDS_metric.py, page_ocr_metric.py, spotting_metric.py with
# spotting_eval/script.py and rrc_evaluation_funcs_1_1.py), re-implemented per task type, every one of its 30
# types scored. The libraries upstream's metrics use are imported inside the functions that need them (the
# training path never loads them): nltk and jieba for the BLEU/METEOR/F-measure/edit-distance types (full-page
# OCR, fine-grained recognition, translation, short-answer handwriting), apted and lxml for TEDS (table and
# chart parsing), zss for document parsing's STEDS; text spotting's boxes are axis-aligned rectangles, whose
# IoU needs no geometry library. METEOR needs NLTK's WordNet data, which is no PyPI package: where it is not
# installed, the rows of those five types are skipped and counted ("no scorer here: TYPE (METEOR needs ...)"),
# and the overall is over the capabilities that remain.


def _lists(answers):
    return [str(a) for a in (answers if isinstance(answers, list) else [answers])]


def ocr_vqa(pred, answers, case_sensitive=False, chinese=False):
    """vqa_evaluation / vqa_evaluation_case_sensitive / cn_vqa_evaluation: a short gold answer (under 5 words;
    for Chinese, under 4 comma-separated parts, spaces removed) scores 1 when it is contained in the
    prediction; a longer one scores its ANLS-style similarity when that is at least 0.5."""
    score = 0.0
    for answer in _lists(answers):
        a, p = answer.strip().replace("\n", " "), str(pred).strip().replace("\n", " ")
        if not case_sensitive:
            a, p = a.lower(), p.lower()
        if chinese:
            a, p = a.replace(" ", ""), p.replace(" ", "")
        short = len(a.split(",")) < 4 if chinese else len(a.split()) < 5
        if short:
            if a in p:
                score = 1.0
        else:
            length = max(len(p), len(a))
            value = 1.0 - (0.0 if length == 0 else levenshtein(p, a) / length)
            if value >= 0.5 and value > score:
                score = value
    return score


def ocr_counting(pred, answers, method):
    """counting_evaluation: "exact match" is containment (the lower-cased gold in the prediction as written,
    as upstream); "regression" reads the prediction's first integer p and scores 1 - |p - a| / a when 0 < p <
    2a and that exceeds 0.5, else 0."""
    best = 0.0
    for answer in _lists(answers):
        answer = answer.lower().strip().replace("\n", " ")
        if method == "exact match":
            score = float(answer in str(pred))
        elif method == "regression":
            found = re.search(r"\d+", str(pred).lower().strip().replace("\n", " "))
            p, a = (int(found.group()) if found else 0), int(answer)
            score = 0.0
            if p and 0 < p < 2 * a:
                iou = 1 - abs(p - a) / a
                score = iou if iou > 0.5 else 0.0
        else:
            raise ValueError(f"OCRBench v2 text counting: unknown eval method {method!r}")
        best = max(best, score)
    return best


def ocr_formula(pred, answers, chinese=False):
    """math_expression_evaluation (cn: \\text{...} unwrapped first): the gold, spaces and newlines removed,
    contained in the prediction likewise."""
    def squash(s):
        if chinese:
            s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
        return s.strip().replace("\n", " ").replace(" ", "")

    return float(any(squash(a) in squash(str(pred)) for a in _lists(answers)))


def ocr_handwritten(pred, answers):
    """handwritten answer extraction cn (choice answers): the letters, joined by any of upstream's separators,
    contained in the prediction."""
    answer = _lists(answers)[0]
    chars = list(answer)
    forms = [answer] if len(answer) <= 1 else [sep.join(chars) for sep in
                                               ("", ".", ". ", ",", ", ", "、", ";", "; ", " ", "和")]
    return float(any(f in str(pred) for f in forms))


def text_to_dict(text):
    """convert_str_to_dict: a fenced or bare JSON / Python dict, else key: value pairs found by a pattern; {}
    when there is nothing; every key and value stripped strings."""
    fenced = re.search(r"```(?:python|json)?\n(.*?)\n```", text, re.DOTALL | re.IGNORECASE)
    content = fenced.group(1) if fenced else text.strip()
    data = None
    for parse in (json.loads, ast.literal_eval):
        try:
            data = parse(content)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(data, dict):
            break
        data = None
    if data is None:
        data = {k.strip(): v.strip() for k, v in
                re.findall(r'["\']?([\w\s]+)["\']?\s*[:=]\s*["\']?([^\n,"\'{}]+)["\']?', content)}
    return {str(k).strip(): str(v).strip() for k, v in data.items()}


def kie_f1(pred, gold):
    """compute_f1_score: the mean over the union of keys of an exact match (lower-cased, spaces removed)."""
    def squash(v):
        return v.lower().strip().replace("\n", " ").replace(" ", "") if v else v

    scores = []
    for key in set(pred) | set(gold):
        p, g = pred.get(key), gold.get(key)
        if p is None and g is None:
            continue
        scores.append(float(p is not None and g is not None and squash(p) == squash(str(g))))
    return sum(scores) / len(scores) if scores else 0.0


def kie_golds(answer):
    """generate_combinations: every dict with one value per key, from a dict whose values may be lists (a
    string holding the dict is parsed first, as upstream does for the hub's stringified answers)."""
    if not isinstance(answer, dict):
        text = str(answer).strip('"')
        try:
            answer = json.loads(text)
        except ValueError:
            answer = ast.literal_eval(text)
    if not isinstance(answer, dict):
        # ValueError kept: a data error (eval.py reports a ValueError by its text)
        raise ValueError(f"key information answer is not a dict: {str(answer)[:80]!r}")  # noqa: TRY004
    values = [v if isinstance(v, list) else [v] for v in answer.values()]
    return [dict(zip(answer, combo)) for combo in itertools.product(*values)]


def ocr_kie(pred, answers):
    golds = kie_golds(answers[0] if isinstance(answers, list) else answers)
    predicted = text_to_dict(str(pred))
    return max((kie_f1(predicted, g) for g in golds), default=0.0)


def box_iou(a, b):
    """calculate_iou of two [x1, y1, x2, y2] boxes (integers; anything else scores 0)."""
    try:
        a, b = [int(v) for v in a], [int(v) for v in b]
    except (TypeError, ValueError):
        return 0.0
    inter = _rect_intersection(a, b)
    union = _rect_area(a) + _rect_area(b) - inter
    return inter / union if union else 0.0


def _rect_area(r):
    return (r[2] - r[0]) * (r[3] - r[1])


def _rect_intersection(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def last_box(text):
    """extract_coordinates: the last (x1, y1, x2, y2) or [x1, y1, x2, y2] with every value in 0..1000."""
    found = [tuple(map(int, m))
             for m in re.findall(r"[\(\[]\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*[\)\]]", text)]
    found = [c for c in found if all(0 <= v <= 1000 for v in c)]
    return list(found[-1]) if found else None


# --- full-page OCR, fine-grained recognition, translation, short-answer handwriting: page_ocr_metric.py

WORDNET_FIX = "python -m nltk.downloader wordnet"
_CJK = re.compile(r"[\u4e00-\u9fa5]")  # page_ocr_metric.py contain_chinese_string


@functools.lru_cache(maxsize=1)
def nltk_wordnet():
    """NLTK's WordNet corpus reader when its data is installed (METEOR's synonym stage), else None; looked up
    once per process."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
    except (LookupError, OSError, ValueError):  # not installed, or an unreadable copy
        return None
    return wordnet


def ocr_text_metrics(pred, gold, wordnet=None):
    """cal_per_metrics: tokens by jieba.lcut when either text holds a CJK character, else whitespace-split;
    BLEU = nltk.translate.bleu (sentence BLEU, uniform 4-gram weights, no smoothing), METEOR =
    nltk.translate.meteor_score.meteor_score over the tokens (`wordnet`: NLTK's WordNet unless another reader
    is passed), F-measure = nltk.metrics f_measure of the two token *sets* (None when one is empty), edit =
    nltk.edit_distance of the raw strings (characters) over the longer one's length."""
    import nltk
    from nltk.metrics import f_measure
    from nltk.translate import bleu
    from nltk.translate.meteor_score import meteor_score

    if wordnet is None:
        wordnet = nltk_wordnet()
        if wordnet is None:
            raise LookupError(f"METEOR needs NLTK's WordNet data: {WORDNET_FIX}")
    if _CJK.search(gold) or _CJK.search(pred):
        import jieba

        jieba.setLogLevel(30)  # its dictionary-loading messages, not a result
        reference, hypothesis = jieba.lcut(gold), jieba.lcut(pred)
    else:
        reference, hypothesis = gold.split(), pred.split()
    with warnings.catch_warnings():  # nltk warns on every text without 4-gram overlaps (it scores 0)
        warnings.simplefilter("ignore")
        value = bleu([reference], hypothesis)
    return {"bleu": value, "meteor": meteor_score([reference], hypothesis, wordnet=wordnet),
            "f_measure": f_measure(set(reference), set(hypothesis)),
            "edit_dist": nltk.edit_distance(pred, gold) / max(len(pred), len(gold))}


def ocr_text_score(pred, answers, wordnet=None):
    """eval.py for full-page OCR en/cn, fine-grained text recognition en, text translation cn and the
    "简答" (short-answer) handwriting questions: (BLEU + METEOR + F + (1 - edit)) / 4 against the first gold.
    An empty prediction scores 0 (eval.py's guard for each type; for handwriting the metrics themselves give
    0, or stop upstream's run when the gold is empty too). A missing value (F of an empty token set) counts 0
    as eval.py's get_value_or_zero does; upstream's cn types add it unguarded and stop there instead."""
    pred = str(pred)
    if not pred:
        return 0.0
    m = ocr_text_metrics(pred, _lists(answers)[0], wordnet)
    return (m["bleu"] + m["meteor"] + (m["f_measure"] or 0.0) + (1 - m["edit_dist"])) / 4


# --- table and chart parsing: TEDS (TEDS_metric.py, PubTabNet's TEDS on apted and lxml)


class _TableNode:
    """TEDS_metric.py TableTree: a node of the table's tree as apted reads it (children); a cell (td) carries
    its colspan, rowspan and content tokens."""

    def __init__(self, tag, colspan=None, rowspan=None, content=None):
        self.tag, self.colspan, self.rowspan, self.content, self.children = tag, colspan, rowspan, content, []


def _cell_tokens(td):
    """TEDS.tokenize: a cell's text as characters, an element inside it as "<tag>", its tokens, "</tag>" and
    its tail's characters (the cell's own tags dropped)."""
    tokens = []

    def walk(node):
        tokens.append(f"<{node.tag}>")
        if node.text is not None:
            tokens.extend(node.text)
        for child in node:
            walk(child)
        if node.tag != "unk":
            tokens.append(f"</{node.tag}>")
        if node.tag != "td" and node.tail is not None:
            tokens.extend(node.tail)

    walk(td)
    return tokens[1:-1]


def _table_tree(node):
    """TEDS.load_html_tree: every element down to the cells; a cell's inside is its content tokens."""
    if node.tag == "td":
        return _TableNode("td", int(node.attrib.get("colspan", "1")), int(node.attrib.get("rowspan", "1")),
                          _cell_tokens(node))
    tree = _TableNode(node.tag)
    tree.children = [_table_tree(child) for child in node]
    return tree


def teds(pred_html, gold_html):
    """TEDS.evaluate (structure and content): both documents parsed by lxml's HTML parser (comments removed);
    0 unless both have body/table; 1 - APTED distance / the larger count of elements under the <table>
    (every element, those inside cells too: upstream's count, kept). Insertions and deletions cost 1; a rename
    costs 1 across tags or spans, else for cells with content the Levenshtein distance of their tokens over
    the longer token list (CustomConfig.rename), else 0. Errors (an unparsable document, a non-numeric span)
    propagate: eval.py's callers decide."""
    from apted import APTED, Config
    from lxml import html

    class CellConfig(Config):
        def rename(self, a, b):
            if (a.tag, a.colspan, a.rowspan) != (b.tag, b.colspan, b.rowspan):
                return 1.0
            if a.tag == "td" and (a.content or b.content):
                return levenshtein(a.content, b.content) / max(len(a.content), len(b.content))
            return 0.0

    if not pred_html or not gold_html:
        return 0.0
    parser = html.HTMLParser(remove_comments=True, encoding="utf-8")
    pred, gold = html.fromstring(pred_html, parser=parser), html.fromstring(gold_html, parser=parser)
    if not (pred.xpath("body/table") and gold.xpath("body/table")):
        return 0.0
    pred, gold = pred.xpath("body/table")[0], gold.xpath("body/table")[0]
    n_nodes = max(len(pred.xpath(".//*")), len(gold.xpath(".//*")))
    distance = APTED(_table_tree(pred), _table_tree(gold), CellConfig()).compute_edit_distance()
    return 1.0 - float(distance) / n_nodes


def wrap_html_table(table):
    """wrap_html_table: newlines removed; a missing <table> / </table> added, then <body> and <html> when
    those exact tags are absent."""
    table = table.replace("\n", "")
    opened, closed = "<table" in table, "</table>" in table
    if opened and not closed:
        table += "</table>"
    elif closed and not opened:
        table = "<table>" + table
    elif not opened and not closed:
        table = "<table>" + table + "</table>"
    if "<body>" not in table:
        table = "<body>" + table + "</body>"
    if "<html>" not in table:
        table = "<html>" + table + "</html>"
    return table


def markdown_table_html(text):
    """convert_markdown_table_to_html: the ends stripped of the characters of "```markdown" (a character set,
    as str.strip reads it: upstream's quirk, kept), the first line the header and the second skipped as the
    separator (whatever it is), each row's cells between its outer pipes, stripped (all-space cells one
    space), no escaping."""
    lines = text.strip("```markdown").strip("```").strip().split("\n")  # noqa: B005 (upstream's, kept)
    rows = []
    for line in [lines[0]] + lines[2:]:
        rows.append([cell.strip() if set(cell) != {" "} else " " for cell in line.strip().split("|")[1:-1]])
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return "<html><body><table>" + body + "</table></body></html>"


def html_table_score(pred, gold):
    """eval.py's html tables (table parsing en asking for html, table parsing cn): the prediction, newlines
    removed, from its first "<body" (else "<table") to the end, no table scoring 0; both sides through
    wrap_html_table; any error of the TEDS computation scores 0 (eval.py's try/except)."""
    flat = str(pred).replace("\n", "")
    start = flat.find("<body") if "<body" in flat else flat.find("<table")
    if start < 0:
        return 0.0
    try:
        return teds(wrap_html_table(flat[start:]), wrap_html_table(gold))
    except Exception:  # noqa: BLE001 (upstream's bare except: whatever breaks the comparison scores 0)
        return 0.0


def markdown_table_score(pred, gold):
    """eval.py's markdown tables (table parsing en asking for markdown): TEDS of the two tables converted to
    html. Upstream has no try/except here (an error stops its run); a prediction that cannot be compared (lxml
    refuses control characters) scores 0."""
    try:
        return teds(markdown_table_html(str(pred)), markdown_table_html(gold))
    except Exception:  # noqa: BLE001 (see the docstring)
        return 0.0


def chart_dict(text):
    """convert_str_to_multi_dict: the longest fenced block (python/json or none) else the text, a leading
    `name =` dropped, everything from a "#" to the line's end dropped (inside strings too: upstream's quirk),
    cut after the last "}", read by ast.literal_eval; {} for anything that is not a dict."""
    blocks = re.findall(r"```(?:python|json)?\n(.*?)\n```", text, re.DOTALL | re.IGNORECASE)
    content = max(blocks, key=len) if blocks else text.strip()
    content = re.sub(r"^\s*\w+\s*=\s*", "", content.strip(), count=1)
    content = re.sub(r"#.*", "", content)
    last = content.rfind("}")
    if last != -1:
        content = content[:last + 1]
    try:
        data = ast.literal_eval(content)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def dict_to_html(data):
    """dict_to_html: one row per key, the key's cell as written and the value's as its text with a space
    between every two characters ("10" -> "1 0": upstream's ' '.join of a string, kept), no escaping."""
    rows = "".join(f"  <tr><td>{key}</td><td>{' '.join(v if isinstance(v, str) else str(v))}</td></tr>\n"
                   for key, v in data.items())
    return "<html><body><table>\n" + rows + "</table></body></html>"


def chart_score(pred, gold):
    """eval.py chart parsing en: 0 for an empty prediction or one with no dict; else TEDS of the two dicts as
    dict_to_html tables (no try/except upstream: an uncomparable prediction scores 0 here)."""
    found = chart_dict(str(pred)) if pred else {}
    if not found:
        return 0.0
    try:
        return teds(dict_to_html(found), dict_to_html(gold))
    except Exception:  # noqa: BLE001 (see the docstring)
        return 0.0


def chart_gold(answer, where):
    """The hub serves a chart's gold dict as its JSON text (the set's build script json.dumps dict answers);
    eval.py reads the dict itself."""
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except ValueError:
            try:
                answer = ast.literal_eval(answer)
            except (ValueError, SyntaxError):
                answer = None
    if not isinstance(answer, dict):
        # ValueError kept: a data error (eval.py reports a ValueError by its text)
        raise ValueError(f"{where}: chart parsing en: the gold answer is not a dict")  # noqa: TRY004
    return answer


# --- document parsing: STEDS over the heading tree (TEDS_metric.py doc_parsing_evaluation, on zss)


def doc_pre_clean(text):
    """pre_clean: tokenizer marks and LaTeX spacing undone, newlines, "*" and "_" made spaces."""
    for pattern, repl in ((r"<bos>|<eos>|<pad>|<unk>", ""), (r"\s##(\S)", r"\1"), (r"\\\s", r"\\"),
                          (r"\s\*\s\*\s", r"**"), (r"{\s", r"{"), (r"\s}", r"}"), (r"\\begin\s", r"\\begin"),
                          (r"\\end\s", r"\\end"), (r"\\end{table}", r"\\end{table} \n\n")):
        text = re.sub(pattern, repl, text)
    return text.replace("\n", " ").replace("*", " ").replace("_", " ")


def doc_tree(text):
    """get_tree: ROOT with a TITLE child; each line, pre-cleaned, is a node: a line starting with "#" (every
    "#" then removed) a child of ROOT and the current heading, any other line a child of the current heading
    (of TITLE before the first) -- found by zss Node.get, the first node in preorder with that label
    (upstream's lookup, kept: a heading whose text an earlier line has gets that line's children). Blank
    lines are nodes."""
    from zss import Node

    tree = Node("ROOT").addkid(Node("TITLE"))
    last_title = ""
    for line in (doc_pre_clean(line) for line in text.split("\n")):
        if line.startswith("#"):
            line = line.replace("#", "")
            tree.addkid(Node(line))  # tree.get("ROOT"): the root itself
            last_title = line
        else:
            tree.get("TITLE" if last_title == "" else last_title).addkid(Node(line))
    return tree


def doc_parsing_score(pred, gold):
    """doc_parsing_evaluation / STEDS: 1 - zss.simple_distance / the larger node count, where inserting or
    deleting a node costs 1 and relabelling costs 1 when either label is blank, else 0 (only the structure
    counts; two blank lines cost 1 too: upstream's label distance, kept)."""
    from zss import simple_distance

    def label_distance(a, b):
        return 1 if not a.split() or not b.split() else 0

    pred_tree, gold_tree = doc_tree(str(pred)), doc_tree(gold)
    distance = simple_distance(pred_tree, gold_tree, label_dist=label_distance)
    return 1 - distance / max(len(list(pred_tree.iter())), len(list(gold_tree.iter())))


# --- text spotting: spotting_metric.py and the RRC end-to-end script (spotting_eval/script.py), as eval.py
# calls them: IOU_CONSTRAINT 0.5, WORD_SPOTTING off, no confidences


def spotting_boxes(text):
    """extract_bounding_boxes_robust: [x1, y1, x2, y2, text] items, read by ast.literal_eval when the whole
    prediction is a literal (then only its 5+-item lists/tuples count), else from every (...) or [...]
    holding no bracket, split at its first four commas; integer coordinates in 0..1000 only, each (box, text)
    once, the text with newlines removed, stripped of spaces, then of double and of single quotes. None when
    none."""
    results, seen = [], set()

    def add(coords, content):
        try:
            box = [int(str(v).strip()) for v in coords]
        except ValueError:
            return
        if all(0 <= v <= 1000 for v in box) and tuple(box + [content]) not in seen:
            seen.add(tuple(box + [content]))
            results.append(box + [content])

    try:
        data = ast.literal_eval(text)
    except Exception:  # noqa: BLE001 (upstream's: anything that is no literal goes to the pattern)
        data = None
    if data is not None:
        for item in data if isinstance(data, (list, tuple)) else []:
            if isinstance(item, (list, tuple)) and len(item) >= 5:
                add(item[:4], str(item[4]).replace("\n", "").strip().strip('"').strip("'"))
    else:
        for item in re.findall(r"[\[\(]\s*([^\[\]\(\)]*?)\s*[\]\)]", text):
            parts = item.split(",", 4)
            if len(parts) == 5:
                add(parts[:4], parts[4].replace("\n", "").strip().strip('"').strip("'"))
    return results or None


def _rrc_transcription(text):
    """A transcription as rrc_evaluation_funcs_1_1.get_tl_line_values reads it back from the line upstream
    writes: carriage returns dropped; a double-quoted one unquoted, with \\\\ and \\" unescaped."""
    text = text.replace("\r", "")
    quoted = re.match(r'^\s*"(.*)"\s*$', text)
    return quoted.group(1).replace("\\\\", "\\").replace('\\"', '"') if quoted else text


def _transcription_match(gold, det, special='!?.:,*"()·[]/\''):
    """script.py transcription_match (ONLY_REMOVE_FIRST_LAST_CHARACTER): equal, or equal once the gold's
    first, last or both characters are dropped when they are special characters. An empty gold against a
    non-empty detection fails here (upstream indexes it and its run stops)."""
    if gold == det:
        return True
    if not gold:
        return False
    first, last = gold[0] in special, gold[-1] in special
    return (first and gold[1:] == det) or (last and gold[:-1] == det) or \
        (first and last and gold[1:-1] == det)


def spotting_hmean(pred_boxes, gold_boxes):
    """spotting_evaluation + script.py evaluate_method on one image: detections with x1 >= x2 or y1 >= y2
    dropped; 0 when no detection or no gold is left. Every box is an axis-aligned rectangle (upstream writes
    the predicted box's four corners and each gold polygon's bounding rectangle), so Polygon3's areas are the
    rectangles' areas. Gold "###" is don't-care, and so is a detection covered more than half by a don't-care
    gold; the rest are matched greedily, gold by gold, detection by detection: the first unmatched pair with
    IoU > 0.5 is a match, correct when the upper-cased transcriptions match (a wrong one still uses the pair
    up). The score is the method's hmean of precision (correct / cared detections) and recall (correct /
    cared golds)."""
    dets = [[*box[:4], _rrc_transcription(box[4])] for box in pred_boxes
            if box[0] < box[2] and box[1] < box[3]]
    golds = [[*box[:4], _rrc_transcription(box[4])] for box in gold_boxes]
    if not dets or not golds:
        return 0.0
    gold_care = [g[4] != "###" for g in golds]
    det_care = [not any(not care and _rect_intersection(g, d) / _rect_area(d) > 0.5
                        for g, care in zip(golds, gold_care)) for d in dets]
    gold_used, det_used, correct = [False] * len(golds), [False] * len(dets), 0
    for gi, g in enumerate(golds):
        for di, d in enumerate(dets):
            if gold_used[gi] or det_used[di] or not gold_care[gi] or not det_care[di]:
                continue
            if box_iou(g[:4], d[:4]) > 0.5:
                gold_used[gi] = det_used[di] = True
                correct += _transcription_match(g[4].upper(), d[4].upper())
    n_gold, n_det = sum(gold_care), sum(det_care)
    recall = correct / n_gold if n_gold else 0.0
    precision = correct / n_det if n_det else 0.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def spotting_gold(row, where):
    """The hub's spotting gold: `bbox_list` (the set's build script moves a spotting row's polygons there) and
    `content`, paired in order; each polygon's bounding rectangle [x1, y1, x2, y2, text] as
    spotting_evaluation writes it (integer coordinates: upstream's line format reads nothing else)."""
    boxes, texts = row.get("bbox_list"), row.get("content")
    if not isinstance(boxes, list) or not isinstance(texts, list):
        # ValueError kept: a data error (eval.py reports a ValueError by its text)
        raise ValueError(f"{where}: text spotting en needs the lists bbox_list and content")  # noqa: TRY004
    gold = []
    for box, text in zip(boxes, texts):
        if not isinstance(box, list) or len(box) < 2 or \
                not all(isinstance(v, (int, float)) and float(v).is_integer() for v in box):
            raise ValueError(f"{where}: text spotting en: a polygon is not integer x, y pairs: {box!r}")
        xs, ys = [int(v) for v in box[0::2]], [int(v) for v in box[1::2]]
        gold.append([min(xs), min(ys), max(xs), max(ys), str(text)])
    return gold


def _ocr_spotting(pred, ex):
    boxes = spotting_boxes(str(pred))
    return spotting_hmean(boxes, ex["spot_gold"]) if boxes else 0.0


def _ocr_table(pred, ex):
    gold = _lists(ex["answer"])[0]
    if ex["table_format"] == "markdown":
        return markdown_table_score(pred, gold)
    return html_table_score(pred, gold)


def _ocr_handwriting(pred, ex):
    if ex.get("short_answer"):  # eval.py: a "简答" question is scored as text, the others as choices
        return ocr_text_score(pred, ex["answer"])
    return ocr_handwritten(pred, ex["answer"])


# task type -> (capability, scorer(pred, example)); capabilities as get_score.py groups them
_EN_VQA = ("APP agent en", "ASCII art classification en", "math QA en", "reasoning VQA en", "science QA en",
           "text recognition en", "document classification en", "cognition VQA en", "diagram QA en")


def _ocr_choice_or_vqa(pred, ex, chinese):
    method = ex.get("ocr_eval")
    if method == "multiple choice":
        return float("".join(c for c in str(pred) if c.isalpha()) == _lists(ex["answer"])[0])
    if method == "case sensitive":
        return ocr_vqa(pred, ex["answer"], case_sensitive=True)
    return ocr_vqa(pred, ex["answer"], chinese=chinese)


def _ocr_position(pred, ex):
    got = text_to_dict(str(pred))
    content = ocr_vqa(got["answer"], ex["answer"]) if "answer" in got else 0.0
    try:
        where = box_iou(ast.literal_eval(got["bbox"]), ex["bbox"]) if "bbox" in got else 0.0
    except (ValueError, SyntaxError):
        where = 0.0
    return 0.5 * content + 0.5 * where


def _ocr_grounding(pred, ex):
    box = last_box(str(pred))
    return box_iou(box, ex["answer"]) if box else 0.0


OCR_TYPES = {
    **{t: ("knowledge_reasoning" if t in ("reasoning VQA en", "science QA en", "APP agent en",
                                          "ASCII art classification en")
           else "mathematical_calculation" if t == "math QA en"
           else "text_recognition" if t == "text recognition en" else "visual_text_understanding",
           lambda p, ex: _ocr_choice_or_vqa(p, ex, False)) for t in _EN_VQA},
    "cognition VQA cn": ("visual_text_understanding", lambda p, ex: _ocr_choice_or_vqa(p, ex, True)),
    "reasoning VQA cn": ("knowledge_reasoning", lambda p, ex: _ocr_choice_or_vqa(p, ex, True)),
    "text counting en": ("mathematical_calculation",
                         lambda p, ex: ocr_counting(p, ex["answer"], ex["ocr_eval"])),
    "formula recognition en": ("element_parsing", lambda p, ex: ocr_formula(p, ex["answer"])),
    "formula recognition cn": ("element_parsing", lambda p, ex: ocr_formula(p, ex["answer"], chinese=True)),
    "key information extraction en": ("relationship_extraction", lambda p, ex: ocr_kie(p, ex["answer"])),
    "key information mapping en": ("relationship_extraction", lambda p, ex: ocr_kie(p, ex["answer"])),
    "key information extraction cn": ("relationship_extraction", lambda p, ex: ocr_kie(p, ex["answer"])),
    "handwritten answer extraction cn": ("relationship_extraction", _ocr_handwriting),
    "text grounding en": ("text_detection", _ocr_grounding),
    "VQA with position en": ("text_detection", _ocr_position),
    "full-page OCR en": ("text_recognition", lambda p, ex: ocr_text_score(p, ex["answer"])),
    "fine-grained text recognition en": ("text_recognition", lambda p, ex: ocr_text_score(p, ex["answer"])),
    "full-page OCR cn": ("text_recognition", lambda p, ex: ocr_text_score(p, ex["answer"])),
    # get_score.py counts translation under knowledge reasoning
    "text translation cn": ("knowledge_reasoning", lambda p, ex: ocr_text_score(p, ex["answer"])),
    "table parsing en": ("element_parsing", _ocr_table),
    "table parsing cn": ("element_parsing", _ocr_table),
    "chart parsing en": ("element_parsing", lambda p, ex: chart_score(p, ex["chart_gold"])),
    "document parsing en": ("element_parsing", lambda p, ex: doc_parsing_score(p, _lists(ex["answer"])[0])),
    "document parsing cn": ("element_parsing", lambda p, ex: doc_parsing_score(p, _lists(ex["answer"])[0])),
    "text spotting en": ("text_spotting", _ocr_spotting),
}
# the task types scored by METEOR among others: without NLTK's WordNet data their rows are skipped, counted
# (handwritten answer extraction cn too, for its "简答" questions)
OCR_METEOR = ("full-page OCR en", "full-page OCR cn", "fine-grained text recognition en",
              "text translation cn")


def score_ocrbench(text, example):
    return OCR_TYPES[example["ocr_type"]][1](final_answer(text), example)


def _ocr_answers(value):
    """The hub serves `answers` as a list of strings (a key-information answer may be a dict or its text)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    return value if isinstance(value, list) else [value]


def convert_ocrbench(row, spec, where):
    kind = str(row["type"])
    language = "cn" if kind.endswith(" cn") else "en"
    if language != spec["language"]:
        return f"{language} rows (the other OCRBench v2 benchmark)"
    if kind not in OCR_TYPES:
        raise ValueError(f"{where}: unknown OCRBench v2 task type {kind!r}")
    question, answers = str(row["question"]), _ocr_answers(row["answers"])
    short_answer = kind == "handwritten answer extraction cn" and "简答" in question
    if (kind in OCR_METEOR or short_answer) and nltk_wordnet() is None:
        return f"no scorer here: {kind}{' (short answer)' if short_answer else ''} " \
               f"(METEOR needs NLTK's WordNet data: {WORDNET_FIX})"
    extra = {"short_answer": True} if short_answer else {}
    if kind in ("table parsing en", "document parsing en", "document parsing cn") and len(answers) != 1:
        # eval.py raises (table) or asserts (documents) unless there is one gold
        raise ValueError(f"{where}: {kind} needs one gold answer, got {len(answers)}")
    first_gold = kind in OCR_METEOR or short_answer or kind in ("table parsing cn", "chart parsing en")
    if first_gold and not answers:
        raise ValueError(f"{where}: {kind} has no gold answer (eval.py reads the first)")
    if kind == "text translation cn" and not str(answers[0]):
        return "text translation cn: empty gold (eval.py marks the row ignore; get_score.py leaves it out)"
    if kind == "table parsing en":  # eval.py: the question's wording picks the format (raw, before anything
        lowered = question.lower()  # is stripped from it); neither word: eval.py sets no score
        if "html" not in lowered and "markdown" not in lowered:
            return "table parsing en: the question names neither html nor markdown (eval.py gives no score)"
        extra["table_format"] = "html" if "html" in lowered else "markdown"
    if kind == "table parsing cn":
        extra["table_format"] = "html"
    if kind == "chart parsing en":
        extra["chart_gold"] = chart_gold(answers[0], where)
    if kind == "text spotting en":
        extra["spot_gold"] = spotting_gold(row, where)
    method = row.get("eval")
    method = None if method in (None, "", "None") else str(method)
    if kind == "text counting en" and method not in ("exact match", "regression"):
        return "answer_format"
    bbox = row.get("bbox")
    return {"question": question, "answer": answers, "route": "ocrbench", "ocr_type": kind,
            "ocr_eval": method, **({"bbox": list(bbox)} if bbox is not None else {}), **extra}


def ocrbench_overall(examples, records):
    """get_score.py's overall: the unweighted mean of the capability means (a record's score is its row's)."""
    capability = {ex["id"]: OCR_TYPES[ex["ocr_type"]][0] for ex in examples}
    by_cap = {}
    for r in records:
        by_cap.setdefault(capability[r["id"]], []).append(r["score"])
    means = {c: sum(v) / len(v) for c, v in sorted(by_cap.items())}
    return sum(means.values()) / len(means), {"capabilities": means}

"""User-facing texts that are not settings (the configurable ones live in config/settings.py)."""

APOLOGY = ("抱歉，暂时无法回答“{question}”，这次没有扣除免费次数，请稍后再问。\n"
           "Sorry, I could not answer “{question}” just now. Your free answer was not used; please ask again.")
"""Sent when the last try of an answer fails; the reserved trial answer has been refunded."""

APOLOGY_MEMBER = ("抱歉，暂时无法回答“{question}”，请稍后再问。\n"
                  "Sorry, I could not answer “{question}” just now; please ask again.")
"""The same, for members and questions that were not charged."""

EXPIRED = ("“{question}”的回答等待领取超时，已作废，免费次数已退还，请重新提问。\n"
           "The answer to “{question}” waited too long to be fetched and was dropped; your free answer "
           "was returned. Please ask again.")
"""Left for the user's next message when an answer nobody fetched expires; the trial answer was refunded."""

EXPIRED_MEMBER = ("“{question}”的回答等待领取超时，已作废，请重新提问。\n"
                  "The answer to “{question}” waited too long to be fetched and was dropped; please ask again.")
"""The same, for members and questions that were not charged."""

CARD_WAITING = "思考中… (thinking…)"
"""What a Feishu answer card shows before the model's first words."""

CARD_STREAMING = "[生成中… / writing…]"
"""The chat list's preview of a Feishu answer card while the answer is being written."""

CARD_THINKING = "思考过程 (thinking)"
"""The title of the collapsed panel that shows a reasoning model's thinking (CHATGATE_SHOW_THINKING)."""

QUOTE_CHARS = 30
"""How much of the question an apology quotes, so the user knows which one it is about."""


def quote(question: str) -> str:
    """The start of a question, on one line, for an apology."""
    line = " ".join(question.split())
    return line if len(line) <= QUOTE_CHARS else line[:QUOTE_CHARS] + "…"


def apology(question: str) -> dict[str, str]:
    """The apology for a question that could not be answered, by what it was charged."""
    q = quote(question)
    return {"trial": APOLOGY.format(question=q), "member": APOLOGY_MEMBER.format(question=q),
            "none": APOLOGY_MEMBER.format(question=q)}


def expired(question: str) -> dict[str, str]:
    """The note for an answer that expired unfetched, by what it was charged."""
    q = quote(question)
    return {"trial": EXPIRED.format(question=q), "member": EXPIRED_MEMBER.format(question=q),
            "none": EXPIRED_MEMBER.format(question=q)}


TEXT_ONLY = "I can only read text messages for now; please type your question."
"""Reply to images, video, files and other media; not charged."""

TRUNCATED = "\n…(answer cut short: it was longer than the platform allows)"
"""Appended to the last part of an answer that did not fit into the platform's message budget."""

DEMO_PREFIX = "[demo: no LLM is configured, set OPENAI_API_KEY] "
"""Every answer of the offline demo responder starts with this, so nobody mistakes it for a model."""

# -- in-chat commands (Chinese first, then English; the command words come from the settings) ------

ME = ("账号 Account: {ref}\n"
      "免费回答 Free answers: 剩余 {trial_left} / {trial_limit} left\n"
      "会员 Membership: {membership}")
"""Reply to the `me` command."""

MEMBER_ACTIVE = "有效期至 {until} / active until {until}"
MEMBER_ENDED = "已于 {until} 到期 / ended {until}"
MEMBER_NONE = "未开通 / none"

RESET = ("好的，已开始新的对话，之前的内容不再作为上下文。\n"
         "Done: a new conversation starts; earlier messages are forgotten.")
"""Reply to the `reset` command."""

REDEEMED = ("兑换成功：会员增加 {days} 天，有效期至 {until}。\n"
            "Code redeemed: {days} days of membership added, now active until {until}.")
"""Reply to a redeemed code."""

CODE_INVALID = ("兑换码无效或已被使用，请检查后重试。\n"
                "This code is not valid or has already been used; please check it and try again.")
"""Reply to a code that is unknown, used, disabled or malformed: the same words for each, so the
reply never tells whether a code exists."""

REDEEM_LIMITED = ("输入错误的兑换码次数过多，请一小时后再试。\n"
                  "Too many wrong codes; please try again in an hour.")
"""Reply when the user sent too many wrong codes within the hour; the code was not tried."""

MEMBERSHIP_TOO_LONG = ("你的会员有效期已经很长，这个兑换码无法再叠加，兑换码未被使用。\n"
                       "Your membership already runs so far ahead that this code cannot be added; the code "
                       "was not used.")
"""Reply when a code would take the membership past the latest expiry chatgate keeps (`bot/limits.py`)."""

REDEEM_USAGE = ("请发送“{word} 兑换码”，例如：{word} ABCD-EFGH-JKMN-PQRS\n"
                "Send “{word}” followed by your code, for example: {word} ABCD-EFGH-JKMN-PQRS")
"""Reply to the redeem word sent without a code."""

HELP = ("可用指令 Commands:\n"
        "{me} — 查看账号、剩余次数和会员有效期 / your account, free answers and membership\n"
        "{reset} — 开始新的对话 / start a new conversation\n"
        "{redeem} + 兑换码 code — 使用兑换码开通会员 / redeem a membership code\n"
        "{buy} — 购买会员 / buy a membership\n"
        "{help} — 显示本说明 / this list\n"
        "其他消息都会作为问题回答。Anything else is a question for the assistant.")
"""Reply to the `help` command; each placeholder is that command's words, e.g. `我的 / me`."""

# -- buying a membership (afdian) -------------------------------------------------------------------

BUY_UNAVAILABLE = ("暂未开通在线购买，请联系管理员。\n"
                   "Memberships cannot be bought here yet; please ask the operator.")
"""Reply to the buy command while no purchase link (`AFDIAN_LINK`) is set."""

ORDER_GRANTED = ("已收到爱发电订单 {order} 的付款（{amount} 元）：会员增加 {days} 天，有效期至 {until}。感谢支持！\n"
                 "Payment received for afdian order {order} ({amount}): {days} days of membership added, active "
                 "until {until}. Thank you!")
"""Told to the user an order was granted to: a notice page (pushed where the account may push, else
carried by their next reply), or the reply to their `兑换 <order number>`."""

ORDER_NOT_GRANTED = ("爱发电订单 {order} 未能开通会员：没有找到这个已付款的会员订单。如有疑问请联系我们。\n"
                     "afdian order {order} added no membership: no paid membership order with this number was "
                     "found. Please contact us if this is wrong.")
"""Told to a user who sent an order number that afdian's look-up refused (unknown, unpaid, another plan)."""

ORDER_CHECKING = ("正在向爱发电核对订单 {order}，确认付款后会员会自动开通并通知你。\n"
                  "Checking afdian order {order}: once it is confirmed paid, your membership starts and you will "
                  "be told.")
"""Reply to `兑换 <order number>` for an order not known to be paid yet: it is being looked up."""

ORDER_YOURS = ("订单 {order} 已经开通到你的账号，会员有效期至 {until}。\n"
               "Order {order} was already added to your account; membership active until {until}.")
"""Reply to `兑换 <order number>` for an order already granted to this user."""

ORDER_INVALID = ("这个订单号无效或已被使用，请检查后重试。\n"
                 "This order number is not valid or has already been used; please check it and try again.")
"""Reply to an order number granted to someone else: the same words whether it exists or not."""

"""User-facing texts that are not settings (the configurable ones live in config/settings.py)."""

APOLOGY = "Sorry, I could not answer that just now. Your free answer was not used; please ask again."
"""Sent when the last try of an answer fails; the reserved trial answer has been refunded."""

APOLOGY_MEMBER = "Sorry, I could not answer that just now; please ask again."
"""The same, for members (nothing was charged)."""

TEXT_ONLY = "I can only read text messages for now; please type your question."
"""Reply to images, video, files and other media; not charged."""

TRUNCATED = "\n…(answer cut short: it was longer than WeChat allows)"
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

REDEEM_USAGE = ("请发送“{word} 兑换码”，例如：{word} ABCD-EFGH-JKMN-PQRS\n"
                "Send “{word}” followed by your code, for example: {word} ABCD-EFGH-JKMN-PQRS")
"""Reply to the redeem word sent without a code."""

HELP = ("可用指令 Commands:\n"
        "{me} — 查看账号、剩余次数和会员有效期 / your account, free answers and membership\n"
        "{reset} — 开始新的对话 / start a new conversation\n"
        "{redeem} + 兑换码 code — 使用兑换码开通会员 / redeem a membership code\n"
        "{help} — 显示本说明 / this list\n"
        "其他消息都会作为问题回答。Anything else is a question for the assistant.")
"""Reply to the `help` command; each placeholder is that command's words, e.g. `我的 / me`."""

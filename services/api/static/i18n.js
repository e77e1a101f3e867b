// Labels in English and Chinese; `t(key, vars)` looks one up in the chosen language.

const STRINGS = {
  en: {
    "app.title": "parksense",
    "nav.overview": "Parks",
    "lang.toggle": "中文",
    "conn.idle": "Connecting…",
    "conn.live": "Live",
    "conn.stale": "Stale",
    "conn.disconnected": "Disconnected — reconnecting",
    "conn.polling": "Auto-refresh",
    "conn.error": "API unreachable",
    "conn.signedout": "Signed out",
    "signin.title": "Sign in",
    "signin.explain": "This API needs a key. Paste one (any scope) to open a dashboard session; the key is not kept in the browser.",
    "signin.key": "API key",
    "signin.submit": "Sign in",
    "signin.bad": "That key is not valid (revoked, or never issued).",
    "signin.out": "Signed out.",
    "signin.signout": "Sign out",
    "conn.updated": "updated {time}",
    "conn.stale_detail": "no update for {age}",
    "stale.banner": "Data is stale: the last update is {age} old. Figures below may be out of date.",
    "stale.database": "The API cannot reach the database; figures below are from {time}.",
    "stale.removed": "This park is no longer registered; figures below are from {time}.",
    "disc.banner": "The live stream dropped. Reconnecting… Figures below are from {time}.",

    "overview.title": "Parks",
    "overview.subtitle": "{parks} parks · {devices} devices · window {window}",
    "overview.empty": "No parks yet. Load a fleet with `parksense fleet load FILE` or PUT /v1/fleet.",
    "overview.vs_1h": "vs 1 h ago",
    "overview.health_6h": "Health index, last 6 h",
    "overview.open": "Open",
    "overview.totals": "All parks",
    "ov.online": "Online",
    "ov.operating": "Operating",
    "ov.power": "Power kW",
    "ov.alarms": "In alarm",

    "park.window": "window {window}",
    "park.as_of": "as of {time}",
    "park.factories_n": "{n} factories",
    "park.devices_n": "{n} devices",
    "park.unknown": "This park does not exist.",
    "park.back": "Back to all parks",

    "sig.health_index": "Health index",
    "sig.online_rate": "Online rate",
    "sig.operating_rate": "Operating rate",
    "sig.capacity_utilization": "Capacity utilization",
    "sig.power_kw": "Power load",
    "sig.energy_kwh": "Energy",
    "sig.energy_intensity_kwh_per_unit": "Energy per unit",
    "sig.alarm_rate": "Alarm rate",
    "sig.output_units": "Output",

    "sub.online": "{a} of {b} devices online",
    "sub.operating": "{a} of {b} factories running",
    "sub.operating_planned": "{a} of {b} scheduled factories running",
    "sub.none_scheduled": "no factory scheduled now",
    "sub.none_scheduled_window": "no line scheduled in window",
    "sub.capacity": "{a} of {b} units in window",
    "sub.power": "{a} of {b} meters online",
    "sub.energy": "used in the last {window}",
    "sub.intensity": "kWh per unit produced",
    "sub.intensity_none": "no output in window",
    "sub.alarm": "{a} of {b} online devices",
    "sub.health": "out of 100",
    "sub.coverage": "coverage {pct}",
    "sub.coverage_low": "low coverage {pct}: only {a} of {b} devices reported",
    "comp.operating_rate": "operating",
    "comp.capacity_utilization": "capacity",
    "comp.online_rate": "online",
    "comp.no_alarm": "no alarm",

    "charts.title": "Last {range}",
    "charts.power": "Power load (kW)",
    "charts.output": "Output (units per {bucket})",
    "charts.operating": "Operating rate (%)",
    "charts.health": "Health index",
    "charts.empty": "No data in this range",
    "charts.loading": "Loading…",
    "charts.unavailable": "History unavailable",
    "charts.off_shift": "Shaded: off shift",

    "alarms.title": "Devices in alarm",
    "alarms.none": "No device in alarm",
    "offline.title": "Offline devices",
    "offline.none": "Every device is online",
    "offline.more": "and {n} more",
    "col.device": "Device",
    "col.factory": "Factory",
    "col.reason": "Reason",
    "col.since": "Since",
    "col.for": "Offline for",
    "col.industry": "Industry",
    "col.devices": "Online",
    "col.lines": "Lines running",
    "col.power": "Power kW",
    "col.capacity": "Capacity",
    "col.alarms": "Alarms",
    "col.status": "Status",

    "reason.state": "state {value}",
    "reason.above_max": "{metric} {value} > {threshold} {unit}",
    "reason.below_min": "{metric} {value} < {threshold} {unit}",
    "reason.no_data": "never reported",
    "reason.silence": "silent",
    "reason.last_will": "disconnected (last will)",
    "reason.offline": "offline",
    "state.running": "running",
    "state.idle": "idle",
    "state.fault": "fault",
    "state.stopped": "stopped",

    "factories.title": "Factories",
    "factory.running": "Running",
    "factory.idle": "Not running",
    "factory.off_shift": "Off shift",
    "factory.no_lines": "No lines",
    "factory.alarm": "Alarm",
    "factory.offline": "Offline",

    "unit.kw": "kW",
    "unit.kwh": "kWh",
    "unit.kwh_per_unit": "kWh/unit",
    "unit.units": "units",
    "ago.now": "just now",
    "dur.s": "{n}s",
    "dur.m": "{n}m",
    "dur.h": "{n}h {m}m",
    "dur.d": "{n}d {h}h",
    "range.1h": "1 h",
    "range.6h": "6 h",
    "range.24h": "24 h",
    "bucket.1m": "minute",
    "bucket.5m": "5 min",
    "bucket.15m": "15 min",
    "bucket.1h": "hour",
    "foot.text": "parksense · live industry-health signals · API reference:",
    "industry.smart-manufacturing": "Smart manufacturing",
    "industry.new-materials": "New materials",
    "industry.electronics": "Electronics",
    "industry.automotive": "Automotive",
    "industry.new-energy": "New energy",
    "industry.food": "Food",
    "industry.textiles": "Textiles",
    "industry.pharmaceuticals": "Pharmaceuticals",
    "industry.equipment": "Equipment",
    "industry.logistics": "Logistics",
    "industry.chemicals": "Chemicals",
  },
  zh: {
    "app.title": "parksense",
    "nav.overview": "园区总览",
    "lang.toggle": "EN",
    "conn.idle": "连接中…",
    "conn.live": "实时",
    "conn.stale": "数据滞后",
    "conn.disconnected": "连接断开，正在重连",
    "conn.polling": "自动刷新",
    "conn.error": "无法连接 API",
    "conn.signedout": "未登录",
    "signin.title": "登录",
    "signin.explain": "该 API 需要密钥。粘贴一个密钥（任意权限）即可开启仪表盘会话；浏览器不会保存密钥。",
    "signin.key": "API 密钥",
    "signin.submit": "登录",
    "signin.bad": "该密钥无效（已吊销或从未签发）。",
    "signin.out": "已退出登录。",
    "signin.signout": "退出登录",
    "conn.updated": "更新于 {time}",
    "conn.stale_detail": "已 {age} 未更新",
    "stale.banner": "数据滞后：最近一次更新在 {age} 前，以下数据可能已过时。",
    "stale.database": "API 无法连接数据库；以下数据截至 {time}。",
    "stale.removed": "该园区已从设备台账中移除；以下数据截至 {time}。",
    "disc.banner": "实时连接已断开，正在重连…以下数据截至 {time}。",

    "overview.title": "园区总览",
    "overview.subtitle": "{parks} 个园区 · {devices} 台设备 · 统计窗口 {window}",
    "overview.empty": "暂无园区。请用 `parksense fleet load FILE` 或 PUT /v1/fleet 导入设备台账。",
    "overview.vs_1h": "较 1 小时前",
    "overview.health_6h": "近 6 小时健康指数",
    "overview.open": "查看",
    "overview.totals": "全部园区",
    "ov.online": "在线率",
    "ov.operating": "开工率",
    "ov.power": "负荷 kW",
    "ov.alarms": "告警设备",

    "park.window": "统计窗口 {window}",
    "park.as_of": "截至 {time}",
    "park.factories_n": "{n} 家工厂",
    "park.devices_n": "{n} 台设备",
    "park.unknown": "该园区不存在。",
    "park.back": "返回园区总览",

    "sig.health_index": "健康指数",
    "sig.online_rate": "设备在线率",
    "sig.operating_rate": "开工率",
    "sig.capacity_utilization": "产能利用率",
    "sig.power_kw": "用电负荷",
    "sig.energy_kwh": "用电量",
    "sig.energy_intensity_kwh_per_unit": "单位产品能耗",
    "sig.alarm_rate": "告警率",
    "sig.output_units": "产量",

    "sub.online": "{b} 台设备中 {a} 台在线",
    "sub.operating": "{b} 家工厂中 {a} 家开工",
    "sub.operating_planned": "{b} 家排班工厂中 {a} 家开工",
    "sub.none_scheduled": "当前无工厂排班",
    "sub.none_scheduled_window": "窗口内无产线排班",
    "sub.capacity": "窗口内产量 {a} / 产能 {b}",
    "sub.power": "{b} 块电表中 {a} 块在线",
    "sub.energy": "近 {window} 用电",
    "sub.intensity": "每件产品耗电 kWh",
    "sub.intensity_none": "窗口内无产量",
    "sub.alarm": "{b} 台在线设备中 {a} 台",
    "sub.health": "满分 100",
    "sub.coverage": "数据覆盖 {pct}",
    "sub.coverage_low": "覆盖率低 {pct}：{b} 台中仅 {a} 台上报",
    "comp.operating_rate": "开工",
    "comp.capacity_utilization": "产能",
    "comp.online_rate": "在线",
    "comp.no_alarm": "无告警",

    "charts.title": "近 {range}",
    "charts.power": "用电负荷（kW）",
    "charts.output": "产量（件 / {bucket}）",
    "charts.operating": "开工率（%）",
    "charts.health": "健康指数",
    "charts.empty": "该时段无数据",
    "charts.loading": "加载中…",
    "charts.unavailable": "历史数据不可用",
    "charts.off_shift": "阴影：非排班时段",

    "alarms.title": "告警设备",
    "alarms.none": "当前无告警设备",
    "offline.title": "离线设备",
    "offline.none": "设备全部在线",
    "offline.more": "另有 {n} 台",
    "col.device": "设备",
    "col.factory": "工厂",
    "col.reason": "原因",
    "col.since": "开始时间",
    "col.for": "离线时长",
    "col.industry": "行业",
    "col.devices": "在线",
    "col.lines": "产线运行",
    "col.power": "负荷 kW",
    "col.capacity": "产能利用",
    "col.alarms": "告警",
    "col.status": "状态",

    "reason.state": "状态 {value}",
    "reason.above_max": "{metric} {value} 高于上限 {threshold} {unit}",
    "reason.below_min": "{metric} {value} 低于下限 {threshold} {unit}",
    "reason.no_data": "从未上报",
    "reason.silence": "长时间无数据",
    "reason.last_will": "连接中断（遗嘱消息）",
    "reason.offline": "离线",
    "state.running": "运行",
    "state.idle": "空闲",
    "state.fault": "故障",
    "state.stopped": "停机",

    "factories.title": "工厂",
    "factory.running": "开工",
    "factory.idle": "停工",
    "factory.off_shift": "休班",
    "factory.no_lines": "无产线",
    "factory.alarm": "告警",
    "factory.offline": "离线",

    "unit.kw": "kW",
    "unit.kwh": "kWh",
    "unit.kwh_per_unit": "kWh/件",
    "unit.units": "件",
    "ago.now": "刚刚",
    "dur.s": "{n} 秒",
    "dur.m": "{n} 分",
    "dur.h": "{n} 小时 {m} 分",
    "dur.d": "{n} 天 {h} 小时",
    "range.1h": "1 小时",
    "range.6h": "6 小时",
    "range.24h": "24 小时",
    "bucket.1m": "分钟",
    "bucket.5m": "5 分钟",
    "bucket.15m": "15 分钟",
    "bucket.1h": "小时",
    "foot.text": "parksense · 园区产业健康实时监测 · API 文档：",
    "industry.smart-manufacturing": "智能制造",
    "industry.new-materials": "新材料",
    "industry.electronics": "电子信息",
    "industry.automotive": "汽车零部件",
    "industry.new-energy": "新能源",
    "industry.food": "食品加工",
    "industry.textiles": "纺织",
    "industry.pharmaceuticals": "生物医药",
    "industry.equipment": "装备制造",
    "industry.logistics": "冷链物流",
    "industry.chemicals": "精细化工",
  },
};

const STORAGE_KEY = "parksense.lang";

function initialLanguage() {
  const url = new URLSearchParams(window.location.search).get("lang");
  if (url && url in STRINGS) return url;
  try {
    const saved = window.localStorage.getItem(STORAGE_KEY);
    if (saved && saved in STRINGS) return saved;
  } catch {
    // Storage may be disabled (private windows); fall back to the browser's language.
  }
  const browser = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
  return browser.toLowerCase().startsWith("zh") ? "zh" : "en";
}

let current = initialLanguage();

export function lang() {
  return current;
}

export function setLang(next) {
  if (!(next in STRINGS)) return;
  current = next;
  try {
    window.localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // Not remembered across reloads; the toggle still works for this page.
  }
  document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
}

export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

// A park's or factory's name in the chosen language: `name_zh` in Chinese when the fleet
// gives one, else `name`, else the id.
export function localName(item, id) {
  if (current === "zh" && item?.name_zh) return item.name_zh;
  return item?.name || id;
}

export function has(key) {
  return key in STRINGS[current] || key in STRINGS.en;
}

document.documentElement.lang = current === "zh" ? "zh-CN" : "en";

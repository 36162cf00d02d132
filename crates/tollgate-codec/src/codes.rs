//! Names for the AVPs Tollgate reads and writes, with the M bit it sets when sending them
//! (RFC 6733 §4.5, RFC 4006 §8, TS 32.299 §7.2, OMA IM). The dictionaries hold the full set;
//! these constants keep later crates free of magic numbers.

use crate::avp::AvpCode;

macro_rules! avp_codes {
    ($($name:ident = $ctor:ident($code:expr) $(.$m:ident())?;)*) => {
        $(pub const $name: AvpCode = AvpCode::$ctor($code)$(.$m())?;)*
    };
}

avp_codes! {
    // RFC 6733 base
    USER_NAME = base(1);
    FILTER_ID = base(11);
    PROXY_STATE = base(33);
    EVENT_TIMESTAMP = base(55);
    HOST_IP_ADDRESS = base(257);
    AUTH_APPLICATION_ID = base(258);
    ACCT_APPLICATION_ID = base(259);
    VENDOR_SPECIFIC_APPLICATION_ID = base(260);
    SESSION_ID = base(263);
    ORIGIN_HOST = base(264);
    SUPPORTED_VENDOR_ID = base(265);
    VENDOR_ID = base(266);
    FIRMWARE_REVISION = base(267).optional();
    RESULT_CODE = base(268);
    PRODUCT_NAME = base(269).optional();
    DISCONNECT_CAUSE = base(273);
    AUTH_SESSION_STATE = base(277);
    ORIGIN_STATE_ID = base(278);
    FAILED_AVP = base(279);
    PROXY_HOST = base(280);
    ERROR_MESSAGE = base(281).optional();
    ROUTE_RECORD = base(282);
    DESTINATION_REALM = base(283);
    PROXY_INFO = base(284);
    RE_AUTH_REQUEST_TYPE = base(285);
    DESTINATION_HOST = base(293);
    ERROR_REPORTING_HOST = base(294).optional();
    TERMINATION_CAUSE = base(295);
    ORIGIN_REALM = base(296);
    EXPERIMENTAL_RESULT = base(297);
    EXPERIMENTAL_RESULT_CODE = base(298);
    INBAND_SECURITY_ID = base(299);

    // RFC 4006 / 8506 credit control
    CC_CORRELATION_ID = base(411).optional();
    CC_INPUT_OCTETS = base(412);
    CC_MONEY = base(413);
    CC_OUTPUT_OCTETS = base(414);
    CC_REQUEST_NUMBER = base(415);
    CC_REQUEST_TYPE = base(416);
    CC_SERVICE_SPECIFIC_UNITS = base(417);
    CC_SESSION_FAILOVER = base(418);
    CC_SUB_SESSION_ID = base(419);
    CC_TIME = base(420);
    CC_TOTAL_OCTETS = base(421);
    CHECK_BALANCE_RESULT = base(422);
    COST_INFORMATION = base(423);
    COST_UNIT = base(424);
    CURRENCY_CODE = base(425);
    CREDIT_CONTROL_FAILURE_HANDLING = base(427);
    DIRECT_DEBITING_FAILURE_HANDLING = base(428);
    EXPONENT = base(429);
    FINAL_UNIT_INDICATION = base(430);
    GRANTED_SERVICE_UNIT = base(431);
    RATING_GROUP = base(432);
    REDIRECT_ADDRESS_TYPE = base(433);
    REDIRECT_SERVER = base(434);
    REDIRECT_SERVER_ADDRESS = base(435);
    REQUESTED_ACTION = base(436);
    REQUESTED_SERVICE_UNIT = base(437);
    SERVICE_IDENTIFIER = base(439);
    SUBSCRIPTION_ID_DATA = base(444);
    UNIT_VALUE = base(445);
    USED_SERVICE_UNIT = base(446);
    VALUE_DIGITS = base(447);
    VALIDITY_TIME = base(448);
    FINAL_UNIT_ACTION = base(449);
    SUBSCRIPTION_ID_TYPE = base(450);
    SUBSCRIPTION_ID = base(443);
    MULTIPLE_SERVICES_INDICATOR = base(455);
    MULTIPLE_SERVICES_CREDIT_CONTROL = base(456);
    USER_EQUIPMENT_INFO = base(458).optional();
    USER_EQUIPMENT_INFO_TYPE = base(459);
    USER_EQUIPMENT_INFO_VALUE = base(460);
    SERVICE_CONTEXT_ID = base(461);

    // 3GPP TS 32.299 (vendor 10415)
    EVENT_TYPE = tgpp(823);
    SIP_METHOD = tgpp(824);
    ROLE_OF_NODE = tgpp(829);
    USER_SESSION_ID = tgpp(830);
    CALLING_PARTY_ADDRESS = tgpp(831);
    CALLED_PARTY_ADDRESS = tgpp(832);
    APPLICATION_SERVER = tgpp(836);
    APPLICATION_PROVIDED_CALLED_PARTY_ADDRESS = tgpp(837);
    IMS_CHARGING_IDENTIFIER = tgpp(841);
    APPLICATION_SERVER_INFORMATION = tgpp(850);
    NODE_FUNCTIONALITY = tgpp(862);
    TIME_QUOTA_THRESHOLD = tgpp(868);
    VOLUME_QUOTA_THRESHOLD = tgpp(869);
    TRIGGER_TYPE = tgpp(870);
    QUOTA_HOLDING_TIME = tgpp(871);
    REPORTING_REASON = tgpp(872);
    SERVICE_INFORMATION = tgpp(873);
    IMS_INFORMATION = tgpp(876);
    QUOTA_CONSUMPTION_TIME = tgpp(881);
    UNIT_QUOTA_THRESHOLD = tgpp(1226);
    TRIGGER = tgpp(1264);
    LOW_BALANCE_INDICATION = tgpp(2020);
    REMAINING_BALANCE = tgpp(2021);

    // OMA IM (vendor 10415)
    SERVICE_GENERIC_INFORMATION = tgpp(1256);
    APPLICATION_SERVER_ID = tgpp(2101);
    APPLICATION_SERVICE_TYPE = tgpp(2102);
    APPLICATION_SESSION_ID = tgpp(2103);
    DELIVERY_STATUS = tgpp(2104);
    IM_INFORMATION = tgpp(2110);
    NUMBER_OF_MESSAGES_SUCCESSFULLY_EXPLODED = tgpp(2111);
    NUMBER_OF_MESSAGES_SUCCESSFULLY_SENT = tgpp(2112);
    TOTAL_NUMBER_OF_MESSAGES_EXPLODED = tgpp(2113);
    TOTAL_NUMBER_OF_MESSAGES_SENT = tgpp(2114);
}

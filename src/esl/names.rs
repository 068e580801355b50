//! The event names switchhook reacts to, declared once.

/// Declares the names: the enum, its spelling, and the lookup from the wire.
macro_rules! event_names {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// An event's `Event-Name`, as far as switchhook tells them apart.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventName {
            $( $(#[$doc])* $variant, )*
            /// Any other event.
            Other,
        }

        impl EventName {
            /// The name of `Event-Name: name`.
            pub fn of(name: &str) -> EventName {
                match name {
                    $( $name => EventName::$variant, )*
                    _ => EventName::Other,
                }
            }

            /// The wire spelling (`OTHER` for the rest).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( EventName::$variant => $name, )*
                    EventName::Other => "OTHER",
                }
            }
        }
    };
}

event_names! {
    /// A channel exists.
    ChannelCreate = "CHANNEL_CREATE",
    /// FreeSWITCH places an outgoing call.
    ChannelOutgoing = "CHANNEL_OUTGOING",
    /// An originated leg (a bridge's or `originate`'s).
    ChannelOriginate = "CHANNEL_ORIGINATE",
    /// Ringing (180).
    ChannelProgress = "CHANNEL_PROGRESS",
    /// Early media (183).
    ChannelProgressMedia = "CHANNEL_PROGRESS_MEDIA",
    /// Answered.
    ChannelAnswer = "CHANNEL_ANSWER",
    /// Two legs bridged.
    ChannelBridge = "CHANNEL_BRIDGE",
    /// A bridge ended.
    ChannelUnbridge = "CHANNEL_UNBRIDGE",
    /// Put on hold.
    ChannelHold = "CHANNEL_HOLD",
    /// Taken off hold.
    ChannelUnhold = "CHANNEL_UNHOLD",
    /// A dial-plan application starts.
    ChannelExecute = "CHANNEL_EXECUTE",
    /// A dial-plan application ended.
    ChannelExecuteComplete = "CHANNEL_EXECUTE_COMPLETE",
    /// Hung up.
    ChannelHangup = "CHANNEL_HANGUP",
    /// Hung up, with the channel's final variables.
    ChannelHangupComplete = "CHANNEL_HANGUP_COMPLETE",
    /// The channel is gone.
    ChannelDestroy = "CHANNEL_DESTROY",
    /// Parked.
    ChannelPark = "CHANNEL_PARK",
    /// Taken out of park.
    ChannelUnpark = "CHANNEL_UNPARK",
    /// The channel's state machine moved.
    ChannelState = "CHANNEL_STATE",
    /// The call state moved (RINGING, ACTIVE, HELD…).
    ChannelCallstate = "CHANNEL_CALLSTATE",
    /// A module's own event (`Event-Subclass` says which).
    Custom = "CUSTOM",
    /// A digit.
    Dtmf = "DTMF",
    /// A recording started.
    RecordStart = "RECORD_START",
    /// A recording stopped.
    RecordStop = "RECORD_STOP",
    /// FreeSWITCH's 20-second heartbeat.
    Heartbeat = "HEARTBEAT",
    /// The caller ID or call state of a channel was updated.
    CallUpdate = "CALL_UPDATE",
    /// A `bgapi` command's result.
    BackgroundJob = "BACKGROUND_JOB",
}

impl std::fmt::Display for EventName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventName {
    /// A `CHANNEL_*` event.
    pub fn is_channel(self) -> bool {
        self.as_str().starts_with("CHANNEL_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_other() {
        for n in ["CHANNEL_CREATE", "CUSTOM", "HEARTBEAT", "RECORD_STOP"] {
            assert_eq!(EventName::of(n).as_str(), n);
        }
        assert_eq!(EventName::of("API"), EventName::Other);
        assert!(EventName::ChannelDestroy.is_channel());
        assert!(!EventName::Dtmf.is_channel());
    }
}
